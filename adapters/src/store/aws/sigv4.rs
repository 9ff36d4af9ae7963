//! AWS Signature Version 4 for one request (header signing). Pure: the
//! time comes in as text, so AWS's published test vectors check it.
//!
//! Written here rather than taken from `aws-sigv4`: that crate needs Rust
//! 1.94 and the AWS SDK's runtime crates; this is the ~80 lines the
//! Secrets Manager calls need, on the hmac/sha2 crates we already use.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// What signs: the key pair and the scope.
pub struct Signer<'a> {
    /// Access key id.
    pub access_key: &'a str,
    /// Secret access key.
    pub secret_key: &'a str,
    /// Region, e.g. `us-east-1`.
    pub region: &'a str,
    /// Service, e.g. `secretsmanager`.
    pub service: &'a str,
}

fn mac(key: &[u8], data: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    Zeroizing::new(mac.finalize().into_bytes().into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// URI-encodes as SigV4 requires: unreserved characters stay, everything
/// else is `%XX` (upper case); `/` stays in paths.
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The query with parameters sorted by name and value, each encoded.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode(k, false), encode(v, false))
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

impl Signer<'_> {
    /// The `Authorization` header for a request whose headers (which must
    /// include `host` and `x-amz-date`) are all signed. `amz_date` is
    /// `YYYYMMDDTHHMMSSZ`.
    pub fn authorization(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        amz_date: &str,
    ) -> String {
        let mut hs: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| {
                let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
                (k.to_ascii_lowercase(), v)
            })
            .collect();
        hs.sort();
        let signed = hs.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
        let canonical_headers: String = hs.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let canonical = format!(
            "{method}\n{}\n{}\n{canonical_headers}\n{signed}\n{}",
            encode(path, true),
            canonical_query(query),
            hex(&Sha256::digest(body)),
        );
        let date = &amz_date[..8.min(amz_date.len())];
        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let secret = Zeroizing::new(format!("AWS4{}", self.secret_key));
        let k = mac(secret.as_bytes(), date.as_bytes());
        let k = mac(k.as_slice(), self.region.as_bytes());
        let k = mac(k.as_slice(), self.service.as_bytes());
        let k = mac(k.as_slice(), b"aws4_request");
        let signature = hex(mac(k.as_slice(), to_sign.as_bytes()).as_slice());
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            self.access_key
        )
    }
}

/// `YYYYMMDDTHHMMSSZ` for a Unix time.
pub fn amz_date(unix_secs: i64) -> String {
    let t = kes_core::time::UnixTime::from_parts(unix_secs, 0).to_string(); // 2015-08-30T12:36:00Z
    t.chars().filter(|c| c.is_ascii_digit() || *c == 'T').collect::<String>() + "Z"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's SigV4 test suite credentials and scope.
    fn suite() -> Signer<'static> {
        Signer {
            access_key: "AKIDEXAMPLE",
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            region: "us-east-1",
            service: "service",
        }
    }

    const DATE: &str = "20150830T123600Z";
    const HOST: (&str, &str) = ("Host", "example.amazonaws.com");

    #[test]
    fn get_vanilla() {
        let a = suite().authorization("GET", "/", "", &[HOST, ("X-Amz-Date", DATE)], b"", DATE);
        assert_eq!(a, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
    }

    #[test]
    fn get_vanilla_query_order_key_case() {
        let a = suite().authorization(
            "GET",
            "/",
            "Param2=value2&Param1=value1",
            &[HOST, ("X-Amz-Date", DATE)],
            b"",
            DATE,
        );
        assert!(
            a.ends_with(
                "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
            ),
            "{a}"
        );
    }

    /// The GET Object example of the S3 documentation (other key, service
    /// and signed headers).
    #[test]
    fn s3_documentation_example() {
        let signer = Signer {
            access_key: "AKIAIOSFODNN7EXAMPLE",
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            region: "us-east-1",
            service: "s3",
        };
        let date = "20130524T000000Z";
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let a = signer.authorization(
            "GET",
            "/test.txt",
            "",
            &[
                ("Host", "examplebucket.s3.amazonaws.com"),
                ("Range", "bytes=0-9"),
                ("x-amz-content-sha256", empty),
                ("x-amz-date", date),
            ],
            b"",
            date,
        );
        assert!(a.ends_with("SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"), "{a}");
    }

    #[test]
    fn dates() {
        assert_eq!(amz_date(1_440_938_160), DATE);
    }
}
