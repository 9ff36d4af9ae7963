//! Any status and body as an answer of the GCP, Azure, CipherTrust,
//! Fortanix or Entrust APIs (or their token endpoints): every parser
//! returns a result, never panics.
#![no_main]

use kes_adapters::https::HttpResponse;
use kes_adapters::store::{azure, entrust, fortanix, gcp, keysecure};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&s, body)) = data.split_first() else { return };
    let status = [200, 201, 204, 400, 401, 404, 409, 429, 500, 503][usize::from(s) % 10];
    let r = HttpResponse { status, location: None, body: zeroize::Zeroizing::new(body.to_vec()) };
    let _ = gcp::proto::token_result(&r);
    let _ = gcp::proto::access_result(&r);
    let _ = gcp::proto::list_result(&r);
    let _ = gcp::proto::error(&r);
    let _ = azure::proto::token_result(&r);
    let _ = azure::proto::versions_result(&r).map(|v| azure::proto::oldest(&v).map(|o| o.created));
    let _ = azure::proto::secret_result(&r, i64::from(s) << 24);
    let _ = azure::proto::list_result(&r);
    let _ = (azure::proto::error_code(&r), azure::proto::error_message(&r));
    let _ = keysecure::login_result(&r);
    let _ = keysecure::export_result(&r);
    let _ = keysecure::list_result(&r);
    let _ = keysecure::failure("x", &r);
    let _ = fortanix::session_result(&r);
    let _ = fortanix::export_result(&r);
    let _ = fortanix::kid(&r);
    let _ = fortanix::list_result(&r);
    let _ = fortanix::failure("x", &r);
    let _ = entrust::token_result(&r, i64::from(s));
    let _ = entrust::checkout_result(&r);
    let _ = entrust::list_result(&r);
    let _ = entrust::failure("x", &r);
});
