//! The bounded queue in front of a model thread: a request that finds it full is refused (429)
//! at once rather than waiting without end.

use crate::api::ApiError;
use crate::metrics::Metrics;
use tokio::sync::mpsc;

/// Queues `item` for the model thread, or says why it cannot be queued.
pub fn enqueue<T>(tx: &mpsc::Sender<T>, item: T, metrics: &Metrics) -> Result<(), ApiError> {
    match tx.try_send(item) {
        Ok(()) => {
            metrics.queued(1);
            Ok(())
        }
        Err(mpsc::error::TrySendError::Full(_)) => Err(ApiError::overloaded()),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(ApiError::unavailable("the model has stopped")),
    }
}
