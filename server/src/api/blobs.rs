//! UploadBegin, UploadChunk, UploadFinish, Download, GetBlobUrl.
//!
//! Begin and chunks are answered in the session's order (chunks of one upload must land
//! in order); finishing (hashing, image inspection) and downloads run as their own tasks,
//! so a big file does not hold up the session's other requests.

use std::sync::Arc;

use tern_proto::pb;
use tern_proto::Body;
use tokio::sync::OwnedSemaphorePermit;

use super::Reply;
use crate::accounts::Authed;
use crate::services::Services;

pub(crate) async fn begin(svc: &Arc<Services>, reply: Reply, b: pb::UploadBegin, a: &Authed) {
    let r = svc.blobs.begin(&a.user, &b.sha256, b.size, &b.mime).await;
    reply.result(r.map(Body::UploadState));
}

pub(crate) async fn chunk(svc: &Arc<Services>, reply: Reply, c: pb::UploadChunk, a: &Authed) {
    let r = svc
        .blobs
        .chunk(&a.user, &c.upload_id, c.offset, c.data)
        .await;
    reply.result(r.map(Body::UploadState));
}

pub(crate) fn finish(
    svc: &Arc<Services>,
    reply: Reply,
    f: pb::UploadFinish,
    a: &Authed,
    permit: OwnedSemaphorePermit,
) {
    let (svc, user) = (svc.clone(), a.user.clone());
    reply.spawn(permit, async move {
        svc.blobs
            .finish(&user, &f.upload_id)
            .await
            .map(Body::BlobInfo)
    });
}

pub(crate) fn download(
    svc: &Arc<Services>,
    reply: Reply,
    d: pb::Download,
    a: &Authed,
    permit: OwnedSemaphorePermit,
) {
    let (svc, user) = (svc.clone(), a.user.clone());
    reply.spawn(permit, async move {
        svc.blobs
            .read(&user, &d.blob_id, d.offset, d.length)
            .await
            .map(Body::BlobChunk)
    });
}

pub(crate) fn url(svc: &Arc<Services>, reply: Reply, g: pb::GetBlobUrl, a: &Authed) {
    reply.result(svc.blobs.url(&a.user, &g.blob_id).map(Body::BlobUrl));
}
