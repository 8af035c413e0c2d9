//! How a client finds the agent on its own host: the default API address and the names of the
//! files the agent keeps in its data dir for its clients. The agent writes them, the client
//! (`aloft-client`) reads them; both take the names from here.

/// Default API address (Fly's private Machines API listens on 4280 too).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4280";
/// File in the data dir holding the API token (mode 0600).
pub const TOKEN_FILE: &str = "token";
/// File in the data dir holding the bound API address, written once the agent listens.
pub const ADDR_FILE: &str = "agent.addr";
/// File in the data dir holding the fingerprint (`sha256:…`) of the API's TLS certificate,
/// written when the agent serves TLS (`aloft agent --tls`); a local client requires exactly
/// that certificate.
pub const FINGERPRINT_FILE: &str = "agent.fingerprint";
