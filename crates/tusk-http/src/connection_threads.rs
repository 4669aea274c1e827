//! The threads connections are served on: a single-threaded runtime per thread, one thread
//! per CPU, and each accepted connection served on one of them for its whole life (the body
//! it streams, the PATCH task that consumes it, the timers that bound it).
//!
//! On one runtime shared by all its workers, a streaming body crossed threads at every read:
//! each arrival on the socket woke the worker parked in `epoll_wait`, which found the
//! connection's task already running on the other worker, and hyper's hand-off of each chunk
//! to the PATCH's task could move it between workers. One 1 GiB upload in 64 MiB PATCHes
//! (`perf stat -e context-switches,raw_syscalls:sys_enter` on the server, 3 rounds in turns,
//! 2026-12-03, README's benchmark section): 6,100-7,000 context switches on the shared
//! runtime, 3,400-3,500 here (null-fsync, a thread per connection: 940-1,450), and
//! 12,100-13,400 system calls instead of 15,800-16,700.
//!
//! A connection goes to the thread serving the fewest and never moves: CPU spent on one
//! connection (a TLS handshake, a checksum) delays only those placed on the same thread,
//! which is why there is one thread per CPU and not fewer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Running connection threads; dropping this stops them (their runtimes drop the tasks
/// still on them, as the end of the process would).
pub(crate) struct ConnectionThreads {
    threads: Vec<ConnectionThread>,
}

struct ConnectionThread {
    runtime: Handle,
    connections: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

/// A connection counted on its thread until this drops.
pub(crate) struct Placed {
    connections: Arc<AtomicUsize>,
}

impl Drop for Placed {
    fn drop(&mut self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnectionThreads {
    /// Starts `count` threads (at least one), named `tusk-conn-N`; the blocking work of the
    /// connections on thread N (file writes) runs on threads named `tusk-conn-N-io`.
    pub fn start(count: usize) -> std::io::Result<Self> {
        let threads = (0..count.max(1))
            .map(start_thread)
            .collect::<std::io::Result<_>>()?;
        Ok(Self { threads })
    }

    /// The runtime of the thread serving the fewest connections, and the new connection's
    /// place in its count.
    pub fn place(&self) -> (Handle, Placed) {
        let thread = self
            .threads
            .iter()
            .min_by_key(|thread| thread.connections.load(Ordering::Relaxed))
            .unwrap_or_else(|| unreachable!("start made at least one thread"));
        thread.connections.fetch_add(1, Ordering::Relaxed);
        let placed = Placed {
            connections: thread.connections.clone(),
        };
        (thread.runtime.clone(), placed)
    }
}

fn start_thread(index: usize) -> std::io::Result<ConnectionThread> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(format!("tusk-conn-{index}-io"))
        .build()?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(format!("tusk-conn-{index}"))
        .spawn(move || {
            runtime.block_on(async {
                let _ = stopped.await;
            });
        })?;
    Ok(ConnectionThread {
        runtime: handle,
        connections: Arc::new(AtomicUsize::new(0)),
        _stop: stop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections go to the thread serving the fewest, and a thread's count falls as its
    /// connections end.
    #[test]
    fn a_connection_goes_to_the_thread_serving_the_fewest() {
        let threads = ConnectionThreads::start(2).expect("threads");
        let counts = |threads: &ConnectionThreads| -> Vec<usize> {
            threads
                .threads
                .iter()
                .map(|t| t.connections.load(Ordering::Relaxed))
                .collect()
        };
        let (_, first) = threads.place();
        let (_, second) = threads.place();
        assert_eq!(counts(&threads), [1, 1]);
        let (_, third) = threads.place();
        assert_eq!(counts(&threads), [2, 1]);
        drop(first);
        drop(third);
        assert_eq!(counts(&threads), [0, 1]);
        let (_, fourth) = threads.place();
        assert_eq!(counts(&threads), [1, 1]);
        drop((second, fourth));
        assert_eq!(counts(&threads), [0, 0]);
    }

    /// What is spawned on a placed connection's runtime runs on that connection thread.
    #[test]
    fn work_placed_on_a_thread_runs_there() {
        let threads = ConnectionThreads::start(1).expect("threads");
        let (runtime, _placed) = threads.place();
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let _ = tx.send(std::thread::current().name().map(str::to_string));
        });
        let name = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("the task ran");
        assert_eq!(name.as_deref(), Some("tusk-conn-0"));
    }
}
