//! Concatenation: a final upload's multipart upload built from its finished partials'
//! objects, with UploadPartCopy wherever a part comes from one partial (the bytes stay in
//! S3) and read-and-send only for parts gathered from partials below the minimum part size.

use futures_util::StreamExt;
use tusk_core::{Segment, StorageError, Stored, UploadRecord, WriteContext};

use crate::client::backend_error;
use crate::layout::{plan_concatenation, PartReceipt, Piece, Session};
use crate::spool::PartSpool;
use crate::S3Storage;

pub(crate) async fn concatenate(
    store: &S3Storage,
    context: WriteContext<'_>,
    partials: &[UploadRecord],
) -> Result<Stored, StorageError> {
    let lens: Vec<u64> = partials.iter().map(|p| p.offset).collect();
    // The engine checks this sum too; storage must not wrap on its own either.
    let total = lens
        .iter()
        .try_fold(0u64, |total, len| total.checked_add(*len))
        .ok_or(StorageError::UploadTooLarge(
            "the concatenated upload's length does not fit in 64 bits",
        ))?;
    if total == 0 {
        // Nothing to copy; finishing stores the empty object.
        return Ok(Stored::default());
    }
    for partial in partials.iter().filter(|p| p.offset > 0) {
        // A partial whose completion failed after its commit is completed now.
        if !store.object_exists(&store.keys.object(&partial.id)).await? {
            use tusk_core::Storage;
            store.finish(partial).await?;
        }
    }
    let part_size = store.rules.part_size_for(Some(total))?;
    let plan = plan_concatenation(&lens, &store.rules, part_size);
    if plan.len() > store.rules.max_parts as usize {
        return Err(StorageError::UploadTooLarge(
            "the concatenation needs more parts than the S3 provider allows",
        ));
    }
    let into = context.lease.upload_id();
    let multipart = store.create_multipart(into).await?;
    let mut append = Vec::with_capacity(plan.len());
    for pieces in &plan {
        let sent = async {
            let target = context.lease.reserve().await?;
            let number = i32::try_from(u64::from(target.seq) + 1).unwrap_or(i32::MAX);
            let (len, receipt) = match pieces.as_slice() {
                [one] => {
                    store
                        .copy_part(partials, one, into, &multipart, number)
                        .await?
                }
                many => {
                    store
                        .gather_part(partials, many, into, &multipart, number)
                        .await?
                }
            };
            Ok::<_, StorageError>(Segment {
                target,
                len,
                receipt: Some(receipt.encode()),
            })
        }
        .await;
        match sent {
            Ok(segment) => append.push(segment),
            Err(error) => {
                let key = store.keys.object(into);
                let aborted =
                    crate::client::abort_multipart(&store.client, &store.bucket, &key, &multipart)
                        .await;
                if let Err(abort_error) = aborted {
                    tracing::warn!(upload_id = %into, error = %abort_error, "aborting a failed concatenation");
                }
                return Err(error);
            }
        }
    }
    Ok(Stored {
        written: total,
        append,
        fold: 0,
        session: Some(
            Session {
                part_size,
                multipart: Some(multipart),
            }
            .encode(),
        ),
        rewritten: 0,
    })
}

/// `bucket/key` as the x-amz-copy-source header wants it: URL-encoded but for slashes.
fn copy_source(bucket: &str, key: &str) -> String {
    let mut out = String::with_capacity(bucket.len() + key.len() + 1);
    for byte in format!("{bucket}/{key}").bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(byte as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

impl S3Storage {
    /// A part copied inside S3 from one range of a partial's object.
    async fn copy_part(
        &self,
        partials: &[UploadRecord],
        piece: &Piece,
        into: &str,
        multipart: &str,
        number: i32,
    ) -> Result<(u64, PartReceipt), StorageError> {
        let source = &partials[piece.source].id;
        let copied = self
            .client
            .upload_part_copy()
            .bucket(&self.bucket)
            .key(self.keys.object(into))
            .upload_id(multipart)
            .part_number(number)
            .copy_source(copy_source(&self.bucket, &self.keys.object(source)))
            .copy_source_range(format!(
                "bytes={}-{}",
                piece.range.start,
                piece.range.end - 1
            ))
            .send()
            .await
            .map_err(|e| backend_error("UploadPartCopy", e))?;
        let result = copied
            .copy_part_result()
            .ok_or_else(|| StorageError::Backend("UploadPartCopy gave no result".into()))?;
        let etag = result
            .e_tag()
            .ok_or_else(|| StorageError::Backend("UploadPartCopy gave no ETag".into()))?;
        Ok((
            piece.range.end - piece.range.start,
            PartReceipt {
                etag: etag.to_string(),
                checksum: result.checksum_crc32().map(str::to_string),
            },
        ))
    }

    /// A part gathered from ranges of several (small) partials, read and sent by the node.
    async fn gather_part(
        &self,
        partials: &[UploadRecord],
        pieces: &[Piece],
        into: &str,
        multipart: &str,
        number: i32,
    ) -> Result<(u64, PartReceipt), StorageError> {
        let mut part = PartSpool::new(&self.spool, 0);
        for piece in pieces {
            let partial = &partials[piece.source];
            let mut stream = self
                .get_range(&partial.id, &piece.range)
                .await?
                .ok_or_else(|| {
                    StorageError::Backend(format!("object of partial {} is missing", partial.id))
                })?;
            while let Some(bytes) = stream.next().await {
                part.append(bytes?).await?;
            }
        }
        let len = part.len();
        let receipt = crate::client::upload_part(
            self.client.clone(),
            self.bucket.clone(),
            self.keys.object(into),
            multipart.to_string(),
            number,
            part.take(0..len).await?,
        )
        .await?;
        Ok((len, receipt))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn copy_source_encodes_all_but_slashes() {
        assert_eq!(
            super::copy_source("b", "up loads/x+y"),
            "b/up%20loads/x%2By"
        );
    }
}
