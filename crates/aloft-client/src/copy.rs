//! `Client::copy_out` / `Client::copy_in`: the tar streams of `aloft machine cp`
//! (`aloft_api::copy`), streamed between a file and the agent, never held whole.

use aloft_api::copy::CopiedIn;
use aloft_api::routes;
use anyhow::Context;
use futures_util::StreamExt;
use reqwest::Method;
use tokio::io::AsyncWriteExt;

use crate::Client;

impl Client {
    /// Writes the tar of `path` in machine `id` of `app` to `into`; the bytes written.
    pub async fn copy_out(
        &self,
        app: &str,
        id: &str,
        path: &str,
        into: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> anyhow::Result<u64> {
        let route = routes::machine_files(app, id);
        let rb = self.request(Method::GET, &route).query(&[("path", path)]);
        let resp = self.send(Method::GET, &route, rb).await?;
        let mut stream = resp.bytes_stream();
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .with_context(|| format!("the copy of {path} from machine {id} was cut short"))?;
            into.write_all(&chunk).await?;
            n += chunk.len() as u64;
        }
        into.flush().await?;
        Ok(n)
    }

    /// Sends the tar `tar` to unpack at `path` in machine `id` of `app`.
    pub async fn copy_in(
        &self,
        app: &str,
        id: &str,
        path: &str,
        tar: tokio::fs::File,
    ) -> anyhow::Result<CopiedIn> {
        let route = routes::machine_files(app, id);
        let rb = self
            .request(Method::PUT, &route)
            .query(&[("path", path)])
            .header("content-type", "application/x-tar")
            .body(tar);
        let resp = self.send(Method::PUT, &route, rb).await?;
        let text = resp.text().await?;
        serde_json::from_str(&text)
            .with_context(|| format!("unexpected answer to PUT {route}: {text}"))
    }
}
