//! Any status and body as a Vault answer: every parser returns a result,
//! never panics.
#![no_main]

use kes_adapters::https::HttpResponse;
use kes_adapters::store::vault::proto;
use kes_core::config::KvVersion;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&s, body)) = data.split_first() else { return };
    let status = [200, 204, 299, 307, 400, 403, 404, 429, 500, 503][usize::from(s) % 10];
    let r = HttpResponse { status, location: None, body: zeroize::Zeroizing::new(body.to_vec()) };
    let _ = proto::create_result(&r);
    let _ = proto::get_result(KvVersion::V1, "k", &r);
    let _ = proto::get_result(KvVersion::V2, "k", &r);
    let _ = proto::delete_result(&r);
    let _ = proto::list_result(&r);
    let _ = proto::health_result(&r);
    let _ = proto::token_result(&r);
});
