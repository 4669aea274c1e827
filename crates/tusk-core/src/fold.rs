//! Folding: how a store keeps the pieces of one upload few when every PATCH adds one.
//!
//! A store whose writes each leave a piece (S3: a tail object per PATCH that ends inside a
//! part; fs: a part file per PATCH) copies the trailing small pieces into the one it writes,
//! and the commit replaces them ([`crate::Stored::fold`]). The rule bounds the count and the
//! copying at once.

use crate::Segment;

/// Most foldable pieces an upload keeps before a write folds the trailing ones into its own.
pub const MOST_PIECES: usize = 16;

/// How many of the committed `pieces` a write that stores `new_len` bytes after them folds
/// into its own piece: none while there are fewer than [`MOST_PIECES`]; then at least two,
/// and before them each piece no bigger than everything folded after it. So the count stays
/// at most [`MOST_PIECES`], and a byte is copied again only when the piece it is in at least
/// doubles. A store that streams and cannot know `new_len` up front passes 0.
pub fn pieces_to_fold(pieces: &[Segment], new_len: u64) -> usize {
    if pieces.len() < MOST_PIECES {
        return 0;
    }
    let mut folded = new_len;
    let mut count = 0;
    for piece in pieces.iter().rev() {
        if count >= 2 && piece.len > folded {
            break;
        }
        folded += piece.len;
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WriteTarget;

    fn piece(len: u64) -> Segment {
        Segment::new(WriteTarget { token: 1, seq: 0 }, len)
    }

    #[test]
    fn pieces_fold_past_the_most_keeping_their_count_bounded() {
        let few: Vec<Segment> = (0..MOST_PIECES - 1).map(|_| piece(10)).collect();
        assert_eq!(pieces_to_fold(&few, 10), 0);
        // Sixteen of ten bytes and ten more: all of them fold (each is no bigger than what
        // comes after it).
        let equal: Vec<Segment> = (0..MOST_PIECES).map(|_| piece(10)).collect();
        assert_eq!(pieces_to_fold(&equal, 10), MOST_PIECES);
        // A big piece first stays; at least two fold even when the last ones are bigger
        // than the new bytes.
        let mut mixed = vec![piece(1 << 20)];
        mixed.extend((1..MOST_PIECES).map(|_| piece(1000)));
        assert_eq!(pieces_to_fold(&mixed, 1), MOST_PIECES - 1);
        // Any history, one write after another, new lengths known or not: never more than
        // MOST_PIECES pieces.
        for known in [true, false] {
            let mut pieces: Vec<Segment> = Vec::new();
            for i in 0..1000u64 {
                let new = 1 + (i * 7919) % 5000;
                let fold = pieces_to_fold(&pieces, if known { new } else { 0 });
                let folded: u64 = pieces[pieces.len() - fold..].iter().map(|s| s.len).sum();
                pieces.truncate(pieces.len() - fold);
                pieces.push(piece(folded + new));
                assert!(
                    pieces.len() <= MOST_PIECES,
                    "{} pieces after write {i}",
                    pieces.len()
                );
            }
        }
    }
}
