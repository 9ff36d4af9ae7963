//! KES v0.19's enclave routes: accepted for the admin so that the seed-era
//! CLI gets a clear answer, but enclaves are not supported.

use super::call::Call;
use super::Server;
use crate::api::{ApiError, Op};
use crate::name::{valid_name, NameError};

pub(super) fn refuse(_: &mut Server, c: Call<'_>) -> Result<(), ApiError> {
    if !valid_name(c.resource) {
        return Err(ApiError::InvalidName(NameError::Key(c.resource.to_owned())));
    }
    // The original's spelling, which clients may match on.
    Err(ApiError::EnclaveUnsupported(if c.op == Op::EnclaveCreate {
        "creating encalves is not supported"
    } else {
        "deleting encalves is not supported"
    }))
}
