//! Copies into and out of a running machine (`aloft machine cp`): tar streams made and unpacked
//! by `aloft_runtime::copy` on blocking threads, fed from and to the connection through
//! channels (the async threads never touch the disk). Bounded by
//! [`aloft_api::copy::MAX_COPY_BYTES`]: a copy out is measured before anything is sent.

use std::io::{Read, Write};

use aloft_api::copy::MAX_COPY_BYTES;
use aloft_runtime::copy::{self, CopyError, CopyRoot};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{Controller, DomainError, DomainResult};

/// A tar being sent: chunks, or the error that cut it short.
pub type TarStream = mpsc::Receiver<Result<Bytes, std::io::Error>>;

impl Controller {
    /// A tar of `path` in the running machine `id` of `app` (see `aloft_runtime::copy`).
    pub async fn copy_out(&self, app: &str, id: &str, path: String) -> DomainResult<TarStream> {
        let root = self.copy_root(app, id).await?;
        let measured = {
            let (root, path) = (root.clone(), path.clone());
            tokio::task::spawn_blocking(move || copy::size_of(&root, &path))
                .await
                .map_err(|e| DomainError::internal(format!("copy task failed: {e}")))?
        };
        let size = measured.map_err(|e| copy_error(id, e))?;
        if size > MAX_COPY_BYTES {
            return Err(copy_error(
                id,
                CopyError::TooLarge {
                    limit: MAX_COPY_BYTES,
                },
            ));
        }
        let (tx, rx) = mpsc::channel(8);
        tokio::task::spawn_blocking(move || {
            let out = ChannelWriter { tx: tx.clone() };
            if let Err(e) = copy::read_tar(
                &root,
                &path,
                std::io::BufWriter::with_capacity(64 << 10, out),
                MAX_COPY_BYTES,
            ) {
                // The client sees the tar cut short (the connection ends in error).
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        });
        Ok(rx)
    }

    /// Unpacks the tar `body` at `path` in the running machine `id` of `app`; the bytes written.
    pub async fn copy_in(
        &self,
        app: &str,
        id: &str,
        path: String,
        mut body: BoxStream<'static, Result<Bytes, String>>,
    ) -> DomainResult<u64> {
        let root = self.copy_root(app, id).await?;
        let (tx, rx) = mpsc::channel::<Result<Bytes, String>>(8);
        let feeder = tokio::spawn(async move {
            while let Some(chunk) = body.next().await {
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    return;
                }
            }
        });
        let written = tokio::task::spawn_blocking(move || {
            let input = ChannelReader {
                rx,
                chunk: Bytes::new(),
            };
            copy::write_tar(&root, &path, input, MAX_COPY_BYTES)
        })
        .await
        .map_err(|e| DomainError::internal(format!("copy task failed: {e}")))?;
        feeder.abort();
        written.map_err(|e| copy_error(id, e))
    }

    async fn copy_root(&self, app: &str, id: &str) -> DomainResult<CopyRoot> {
        self.running_record(app, id, "copy files of").await?;
        self.sup
            .copy_root(id)
            .map_err(|e| super::exec::not_running_or_failure(id, e))
    }
}

fn copy_error(id: &str, e: CopyError) -> DomainError {
    match e {
        CopyError::Refused(m) => DomainError::invalid_request(m),
        CopyError::NotFound(p) => {
            DomainError::not_found(format!("{p} does not exist in machine {id}"))
        }
        CopyError::TooLarge { limit } => DomainError::TooLarge(format!(
            "the copy is larger than the {} MiB a copy may carry; copy less at a time",
            limit >> 20
        )),
        CopyError::Io { what, source } => {
            DomainError::invalid_request(format!("machine {id}: {what}: {source}"))
        }
    }
}

/// `Write` into a channel of chunks (on a blocking thread).
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
            })?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `Read` from a channel of chunks (on a blocking thread).
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    chunk: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(c)) => self.chunk = c,
                Some(Err(e)) => {
                    return Err(std::io::Error::other(format!("reading the upload: {e}")))
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}
