//! The tokio runtime the bindings run the SDK on: one per process, started on first use,
//! two worker threads named `tern-ffi`. The foreign language's own async machinery
//! (Kotlin coroutines, Swift async, Python asyncio) only awaits a [`JoinHandle`] of a task
//! spawned here, so no call depends on which thread or executor the app calls from.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Runtime;

use crate::FfiError;

pub(crate) fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tern-ffi")
            .enable_all()
            .build()
            // Without a runtime no call can work; this only fails when the OS refuses threads.
            .expect("tern-ffi: cannot start the tokio runtime")
    })
}

/// Runs `fut` on the runtime and waits for it from whatever executor polls this future.
/// A panic inside becomes [`FfiError::Internal`], never an unwind into the app.
pub(crate) async fn on_runtime<T, F>(fut: F) -> Result<T, FfiError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, FfiError>> + Send + 'static,
{
    match runtime().spawn(fut).await {
        Ok(r) => r,
        Err(e) => Err(FfiError::Internal {
            detail: format!("task failed: {e}"),
        }),
    }
}
