//! The HTTP client of the commands that talk to a running server (`facematch jobs`, `facematch models migrate`):
//! where it is, the API key, and the server's JSON answers with its errors turned into this side's errors.

use anyhow::Context;
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The server (default http://127.0.0.1:8080).
    #[arg(long, env = "FACEMATCH_SERVER", default_value = "http://127.0.0.1:8080")]
    pub(super) server: String,
    /// An API key; its role decides what the command may do (jobs: an investigator's; models: an admin's).
    #[arg(long, env = "FACEMATCH_API_KEY", hide_env_values = true)]
    pub(super) key: String,
}

/// A running server's API, with the key (and purpose) on every request.
pub(super) struct Api {
    pub(super) client: reqwest::Client,
    base: String,
}

impl Api {
    pub(super) fn new(args: &ServerArgs, purpose: Option<&str>) -> anyhow::Result<Api> {
        let mut headers = reqwest::header::HeaderMap::new();
        let bearer = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", args.key)).context("the api key is not printable")?;
        headers.insert(reqwest::header::AUTHORIZATION, bearer);
        if let Some(purpose) = purpose {
            headers.insert("x-facematch-purpose", reqwest::header::HeaderValue::from_str(purpose).context("the purpose is not printable")?);
        }
        let client = reqwest::Client::builder().default_headers(headers).build()?;
        Ok(Api { client, base: args.server.trim_end_matches('/').to_owned() })
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The answer's JSON, or the server's error as the error.
    pub(super) async fn json(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request.send().await.with_context(|| format!("no answer from {}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let error = &body["error"];
            anyhow::bail!("{status}: {} ({})", error["message"].as_str().unwrap_or("no message"), error["code"].as_str().unwrap_or("?"));
        }
        Ok(body)
    }
}
