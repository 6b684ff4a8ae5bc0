//! The manage operation: adopt an existing process as a job.

use crate::adapters::validation;
use crate::chain::{Chain, Handler, OpResult};
use crate::engine::{ManageRequest, ManageResponse};
use crate::error::EngineError;
use crate::process::inspect;

/// The manage chain.
pub fn chain() -> Chain<ManageRequest, ManageResponse> {
    Chain::new(Handler::from_fn("describe_process", |req| {
        Box::pin(async move { describe(req) })
    }))
    .with([validation::validate_manage_request()])
}

fn describe(req: ManageRequest) -> OpResult<ManageResponse> {
    let info = inspect::read_info(req.pid).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => EngineError::NoSuchProcess { pid: req.pid },
        _ => EngineError::Inspect {
            pid: req.pid,
            source: e,
        },
    })?;
    Ok(ManageResponse { info })
}
