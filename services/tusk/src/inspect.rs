//! `tusk inspect ID` and `tusk uploads`: an upload's state, and the uploads a node writes
//! now, read from a running node's admin listener (`/uploads/{id}`, `/uploads`).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;

use crate::admin_client::AdminTarget;

/// Show one upload: offset and length, segments, expiry, the last commit's node, token and
/// time, and whether the asked node is writing it now.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The upload's ID (the last part of its URL).
    pub id: String,
    /// Print the admin listener's JSON as it came.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: AdminTarget,
}

/// List the uploads a node is writing now, with their progress.
#[derive(Debug, Args)]
pub struct UploadsArgs {
    /// Print the admin listener's JSON as it came.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: AdminTarget,
}

fn fetch(target: &AdminTarget, path: &str) -> Result<Value> {
    let answer = target.get(path)?;
    let body: Value = serde_json::from_str(&answer.body)
        .with_context(|| format!("{path} answered {}: {}", answer.status, answer.body.trim()))?;
    if answer.status != 200 {
        let error = body["error"].as_str().unwrap_or("error");
        bail!("{path}: {error} (asked node {})", body["node"]);
    }
    Ok(body)
}

pub fn inspect(args: &InspectArgs) -> Result<()> {
    // The ID goes into a path: anything but an ID's characters is refused here already.
    if !tusk_protocol::is_valid_upload_id(&args.id) {
        bail!("{:?} is not an upload ID", args.id);
    }
    let upload = fetch(&args.target, &format!("/uploads/{}", args.id))?;
    if args.json {
        println!("{upload}");
        return Ok(());
    }
    let now = unix_now();
    let field = |name: &str| upload[name].clone();
    println!("id            {}", text(&field("id")));
    println!("state         {}", text(&field("state")));
    println!("progress      {}", progress(&upload));
    println!("segments      {}", text(&field("segments")));
    println!("created       {}", when(&field("created_at"), now));
    println!("expires       {}", when(&field("expires_at"), now));
    if !upload["purge_at"].is_null() {
        println!("purged        {}", when(&field("purge_at"), now));
    }
    println!("concat        {}", text(&field("concat")));
    println!("metadata      {}", text(&field("metadata")));
    let last = &upload["last_commit"];
    if last.is_null() {
        println!("last commit   none yet");
    } else {
        println!(
            "last commit   {} by {} under lease token {}",
            when(&last["at"], now),
            text(&last["node"]),
            text(&last["token"])
        );
    }
    let writing = &upload["writing_here"];
    if writing.is_null() {
        println!("asked node    not writing it");
    } else {
        println!(
            "asked node    {} is writing it ({})",
            text(&writing["node"]),
            text(&writing["phase"])
        );
    }
    Ok(())
}

pub fn uploads(args: &UploadsArgs) -> Result<()> {
    let answer = fetch(&args.target, "/uploads")?;
    if args.json {
        println!("{answer}");
        return Ok(());
    }
    let now = unix_now();
    let list = answer["uploads"].as_array().cloned().unwrap_or_default();
    println!(
        "{} writes {} upload(s) now",
        text(&answer["node"]),
        list.len()
    );
    if list.is_empty() {
        return Ok(());
    }
    println!(
        "{:<32} {:>28} {:>16} {:>14}",
        "ID", "PROGRESS", "PHASE", "LAST COMMIT"
    );
    for upload in &list {
        println!(
            "{:<32} {:>28} {:>16} {:>14}",
            text(&upload["id"]),
            progress(upload),
            text(&upload["writing_here"]["phase"]),
            when(&upload["last_commit"]["at"], now),
        );
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `offset / length (percent)`, or `offset / unknown` while the length is deferred.
fn progress(upload: &Value) -> String {
    let offset = upload["offset"].as_u64().unwrap_or(0);
    match upload["length"].as_u64() {
        Some(0) => "0 / 0 (100%)".into(),
        Some(length) => format!(
            "{offset} / {length} ({:.0}%)",
            offset as f64 * 100.0 / length as f64
        ),
        None => format!("{offset} / unknown"),
    }
}

/// A unix time as how long ago (or from now) it is.
fn when(value: &Value, now: u64) -> String {
    let Some(at) = value.as_u64() else {
        return "-".into();
    };
    let span = |secs: u64| {
        humantime_serde::re::humantime::format_duration(std::time::Duration::from_secs(secs))
            .to_string()
    };
    if at <= now {
        format!("{} ago", span(now - at))
    } else {
        format!("in {}", span(at - now))
    }
}
