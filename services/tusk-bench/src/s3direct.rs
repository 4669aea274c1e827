//! `s3-direct`: the yardstick for Tusk on S3. One upload of `--big-size` bytes sent straight
//! to an S3 server as a plain multipart upload, with the part size, parts in flight and
//! checksum Tusk uses, from the same payload generator, so that `big` through Tusk to the
//! same server can be compared with it.

use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::BytesMut;
use serde_json::json;
use tokio::task::JoinSet;

use crate::payload::{mix64, Payload};
use crate::util::{mib_per_s, round, Obj};
use crate::BenchArgs;

pub async fn direct_multipart(args: &BenchArgs) -> Result<Obj> {
    let size = args.big_size;
    let part_size = args.s3_part_size;
    let in_flight = args.s3_parts_in_flight.max(1);
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .endpoint_url(args.url.trim_end_matches('/'))
        .force_path_style(true)
        .build();
    let client = aws_sdk_s3::Client::from_conf(config);
    let bucket = args.s3_bucket.clone();
    // The bucket may exist already; a real failure shows at the first upload.
    let _ = client.create_bucket().bucket(&bucket).send().await;
    let key = format!("bench-direct-{:016x}", mix64(args.seed ^ size));
    // The same payload as `big` (scenario 1, index 0).
    let payload = Payload::new(mix64(args.seed ^ (1 << 56)));
    eprintln!("tusk bench: s3-direct: {size} bytes in parts of {part_size}, {in_flight} in flight");

    let start = Instant::now();
    let created = client
        .create_multipart_upload()
        .bucket(&bucket)
        .key(&key)
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .send()
        .await
        .context("CreateMultipartUpload")?;
    let upload_id = created
        .upload_id()
        .ok_or_else(|| anyhow!("no upload id"))?
        .to_string();
    let mut tasks = JoinSet::new();
    let mut parts = Vec::new();
    let mut offset = 0u64;
    let mut number = 1;
    while offset < size {
        let len = part_size.min(size - offset);
        // Generated like a request body arriving: part by part, at most `in_flight` held.
        let mut body = BytesMut::zeroed(len as usize);
        payload.fill(offset, &mut body);
        let (client, bucket, key, upload_id) = (
            client.clone(),
            bucket.clone(),
            key.clone(),
            upload_id.clone(),
        );
        tasks.spawn(async move {
            let sent = client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .body(ByteStream::from(body.freeze()))
                .send()
                .await
                .context("UploadPart")?;
            anyhow::Ok(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(sent.e_tag().map(str::to_string))
                    .set_checksum_crc32(sent.checksum_crc32().map(str::to_string))
                    .build(),
            )
        });
        while tasks.len() >= in_flight {
            if let Some(done) = tasks.join_next().await {
                parts.push(done??);
            }
        }
        offset += len;
        number += 1;
    }
    while let Some(done) = tasks.join_next().await {
        parts.push(done??);
    }
    parts.sort_by_key(|p| p.part_number());
    client
        .complete_multipart_upload()
        .bucket(&bucket)
        .key(&key)
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .context("CompleteMultipartUpload")?;
    let seconds = start.elapsed().as_secs_f64();
    let mut obj = Obj::new();
    obj.insert("scenario", json!("s3-direct"));
    obj.insert("bytes", json!(size));
    obj.insert("part_size", json!(part_size));
    obj.insert("parts_in_flight", json!(in_flight));
    obj.insert("seconds", json!(round(seconds, 3)));
    obj.insert("mib_per_s", json!(mib_per_s(size, seconds)));
    client
        .delete_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .context("DeleteObject")?;
    Ok(obj)
}
