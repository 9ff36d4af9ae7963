//! Config of the cloud and vendor key stores beyond Vault and AWS
//! (config.md §4.3): GCP Secret Manager, Azure Key Vault, Thales
//! CipherTrust / Gemalto KeySecure, Fortanix DSM and Entrust KeyControl.

use super::Secret;

/// `keystore.gcp.secretmanager`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcpConfig {
    /// The Secret Manager REST API, `https://host[:port]` (KES's
    /// `host:port` default gets https://).
    pub endpoint: String,
    /// The project the secrets live in.
    pub project_id: String,
    /// OAuth2 scopes asked for (default: cloud-platform).
    pub scopes: Vec<String>,
    /// The service account's key; `None` (no `client_email` and no
    /// `private_key`, as KES configs on GCE/GKE leave them): Application
    /// Default Credentials, found by the store.
    pub credentials: Option<GcpCredentials>,
}

/// A GCP service account's key (the fields of its JSON key file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcpCredentials {
    /// `client_email`: the JWT's issuer.
    pub client_email: String,
    /// `client_id` (informational).
    pub client_id: String,
    /// `private_key_id`: the JWT header's `kid`.
    pub private_key_id: String,
    /// `private_key`: PKCS#8 PEM of the RSA key.
    pub private_key: Secret,
    /// `token_uri`: where the signed JWT is exchanged for a token
    /// (default Google's; an extension KES lacks, named as in the key file).
    pub token_uri: String,
}

/// `keystore.azure.keyvault`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureConfig {
    /// The vault, `https://<name>.vault.azure.net`.
    pub endpoint: String,
    /// How kes gets its tokens.
    pub auth: AzureAuth,
}

/// Azure credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AzureAuth {
    /// An app registration's client secret.
    ClientSecret {
        /// Directory (tenant) id.
        tenant_id: String,
        /// Application (client) id.
        client_id: String,
        /// The client secret.
        client_secret: Secret,
    },
    /// The managed identity of the machine (IMDS), by client id.
    ManagedIdentity {
        /// Client id of a user-assigned identity.
        client_id: String,
    },
    /// Neither block: `AZURE_TENANT_ID`/`AZURE_CLIENT_ID`/`AZURE_CLIENT_SECRET`
    /// from the environment, else the system-assigned managed identity.
    Default,
}

/// `keystore.gemalto.keysecure`: Thales CipherTrust Manager / KeySecure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySecureConfig {
    /// `https://host[:port]`.
    pub endpoint: String,
    /// The refresh token kes logs in with.
    pub token: Secret,
    /// The domain (empty: root).
    pub domain: String,
    /// CA file or directory (default: system roots).
    pub tls_ca: Option<String>,
}

/// `keystore.fortanix.sdkms`: Fortanix DSM (SDKMS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FortanixConfig {
    /// `https://host[:port]`.
    pub endpoint: String,
    /// Group new keys are created in (empty: the app's default group).
    pub group_id: String,
    /// The application's API key.
    pub api_key: Secret,
    /// CA file or directory (default: system roots).
    pub tls_ca: Option<String>,
}

/// `keystore.entrust.keycontrol`: Entrust KeyControl secrets vault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntrustConfig {
    /// `https://host[:port]`.
    pub endpoint: String,
    /// The vault logged in to.
    pub vault_id: String,
    /// The box the secrets live in.
    pub box_id: String,
    /// Login user name.
    pub username: String,
    /// Login password.
    pub password: Secret,
    /// CA file or directory (default: system roots).
    pub tls_ca: Option<String>,
}
