//! Key stores: each executes the core's [`Command`]s.
//!
//! [`contract`] is what every store implements (each store module imports
//! it); [`open`] picks and opens the store a config names (it imports every
//! store). This module only names them, so the arrows run one way:
//! open -> stores -> contract.

pub mod aws;
pub mod azure;
pub mod contract;
pub mod entrust;
pub mod fortanix;
mod fs;
pub mod gcp;
pub mod hsm;
pub mod keysecure;
mod mem;
mod open;
pub mod rest;
pub mod vault;

pub use aws::AwsStore;
pub use contract::{KeyStore, Remote, RemoteStore, StoreFuture};
pub use fs::FsStore;
pub use mem::MemStore;
pub use open::{open, open_with_env, with_hsm, Opened};
pub use vault::VaultStore;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::https::HttpResponse;

    /// JSON-ish bodies built from the fields the parsers look at, so the
    /// random cases reach past the first `serde_json` error.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        let key = prop::sample::select(vec![
            "access_token",
            "expires_in",
            "expires_at",
            "payload",
            "data",
            "secrets",
            "name",
            "nextPageToken",
            "value",
            "nextLink",
            "id",
            "attributes",
            "enabled",
            "created",
            "nbf",
            "exp",
            "material",
            "resources",
            "total",
            "kid",
            "secret_data",
            "next_token",
            "expired",
            "error",
            "status",
            "code",
            "codeDesc",
            "jwt",
            "duration",
        ]);
        let leaf = prop_oneof![
            Just("null".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            "[ -~]{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just("\"eyJib3hfaWQiOiJiIiwibmV4dF9jdHgiOiJjIn0=\"".to_owned()),
        ];
        let value = leaf.prop_recursive(3, 24, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((key.clone(), inner), 0..5).prop_map(|kv| {
                    let fields: Vec<String> =
                        kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        });
        prop_oneof![value.prop_map(String::into_bytes), prop::collection::vec(any::<u8>(), 0..64)]
    }

    proptest! {
        /// What fuzz/fuzz_targets/cloud_response.rs runs, on every test run.
        #[test]
        fn cloud_parsers_never_panic(status in prop::sample::select(vec![200u16, 201, 204, 401, 404, 409, 429, 503]), b in body()) {
            use super::{aws, azure, entrust, fortanix, gcp, keysecure, vault};
            let r = HttpResponse { status, location: None, body: zeroize::Zeroizing::new(b) };
            let _ = (gcp::proto::token_result(&r), gcp::proto::access_result(&r), gcp::proto::list_result(&r));
            let _ = azure::proto::versions_result(&r).map(|v| azure::proto::oldest(&v).map(|o| o.created));
            let _ = (azure::proto::token_result(&r), azure::proto::secret_result(&r, 0), azure::proto::list_result(&r));
            let _ = (keysecure::login_result(&r), keysecure::export_result(&r), keysecure::list_result(&r));
            let _ = (fortanix::session_result(&r), fortanix::export_result(&r), fortanix::kid(&r), fortanix::list_result(&r));
            let _ = (entrust::token_result(&r, 0), entrust::checkout_result(&r), entrust::list_result(&r));
            let _ = (aws::proto::get_result(&r), aws::proto::list_result(&r), aws::proto::create_result(&r));
            let _ = (vault::proto::get_result(kes_core::config::KvVersion::V1, "name", &r), vault::proto::token_result(&r));
            let _ = (vault::proto::get_result(kes_core::config::KvVersion::V2, "name", &r), vault::proto::list_result(&r));
        }
    }
}
