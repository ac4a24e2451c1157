//! `pushgate store export` / `import`: registrations (and pending outbox
//! entries) as JSON lines, so a single-node install can move to Redis.
//!
//! The first line carries the deployment key: node ids are derived under it, so
//! the XMPP servers' stored nodes stay valid only if the target uses the same
//! key. An export is therefore as secret as the store itself.

use super::model::{decode, encode};
use super::{Backend, NodeKeys, OutboxWrite, Registration, Registry, RegistryError, blocking};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use thiserror::Error;

/// The export format's version.
const FORMAT: u32 = 1;
/// Registrations written to the target per batch.
const BATCH: usize = 1_000;

/// One line of an export.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportLine {
    /// First line: format version and the deployment key (hex).
    Header {
        /// Export format version.
        format: u32,
        /// The key node ids are derived under, 64 hex digits.
        deployment_key: String,
    },
    /// One registration, as stored.
    Registration(Registration),
    /// One pending outbox entry: its key and stored value (base64).
    Outbox {
        /// The entry's key.
        key: String,
        /// The stored value, base64.
        value: String,
    },
}

/// What an import wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Registrations written.
    pub registrations: u64,
    /// Outbox entries written.
    pub outbox: u64,
}

/// Why an export or import stopped.
#[derive(Debug, Error)]
pub enum TransferError {
    /// Reading or writing the file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] RegistryError),
    /// A line is not what an export contains.
    #[error("line {line}: {message}")]
    Format {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The target holds registrations derived under another deployment key.
    #[error(
        "the target store already holds {0} registrations under a different deployment key; import into an empty store"
    )]
    KeyMismatch(u64),
}

impl Registry {
    /// Writes every registration and outbox entry to `out`, returning the counts.
    pub async fn export(&self, out: &mut impl Write) -> Result<ImportSummary, TransferError> {
        let key = self.keys()?.deployment_key_hex();
        let header = ExportLine::Header {
            format: FORMAT,
            deployment_key: key,
        };
        write_line(out, &header)?;
        let mut summary = ImportSummary::default();
        for (node, bytes) in self.raw_registrations().await? {
            write_line(out, &ExportLine::Registration(decode(&node, &bytes)?))?;
            summary.registrations += 1;
        }
        for (key, bytes) in self.outbox_load().await? {
            let value = STANDARD.encode(bytes);
            write_line(out, &ExportLine::Outbox { key, value })?;
            summary.outbox += 1;
        }
        out.flush()?;
        Ok(summary)
    }

    /// Reads an export from `input` into this store. The store must be empty or
    /// already use the export's deployment key. Meant for a stopped gateway.
    pub async fn import(&self, input: impl BufRead) -> Result<ImportSummary, TransferError> {
        let mut lines = input.lines().enumerate();
        let format_error = |line: usize, message: String| TransferError::Format {
            line: line + 1,
            message,
        };
        let key = match lines.next() {
            Some((n, line)) => match serde_json::from_str::<ExportLine>(&line?) {
                Ok(ExportLine::Header {
                    format: FORMAT,
                    deployment_key,
                }) => NodeKeys::key_from_hex(&deployment_key).ok_or_else(|| {
                    format_error(n, "deployment_key is not 64 hex digits".to_owned())
                })?,
                Ok(_) => {
                    return Err(format_error(
                        n,
                        format!("expected a header of format {FORMAT}"),
                    ));
                }
                Err(e) => return Err(format_error(n, e.to_string())),
            },
            None => return Err(format_error(0, "empty input".to_owned())),
        };
        if self.keys()?.deployment_key_hex() != hex::encode(key) {
            let existing = self.count().await?;
            if existing > 0 {
                return Err(TransferError::KeyMismatch(existing));
            }
            self.set_deployment_key(key).await?;
        }
        let mut summary = ImportSummary::default();
        let mut batch = Vec::new();
        let mut outbox = Vec::new();
        for (n, line) in lines {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<ExportLine>(&line) {
                Ok(ExportLine::Registration(r)) => batch.push(r),
                Ok(ExportLine::Outbox { key, value }) => {
                    let value = STANDARD
                        .decode(value)
                        .map_err(|e| format_error(n, format!("outbox value: {e}")))?;
                    outbox.push(OutboxWrite {
                        key,
                        value: Some(value),
                    });
                }
                Ok(ExportLine::Header { .. }) => {
                    return Err(format_error(n, "a second header".to_owned()));
                }
                Err(e) => return Err(format_error(n, e.to_string())),
            }
            if batch.len() >= BATCH {
                summary.registrations += self.put_many(std::mem::take(&mut batch)).await?;
            }
        }
        summary.registrations += self.put_many(batch).await?;
        summary.outbox = outbox.len() as u64;
        if !outbox.is_empty() {
            self.outbox_apply(outbox.into()).await?;
        }
        Ok(summary)
    }

    async fn raw_registrations(&self) -> Result<Vec<(String, Vec<u8>)>, RegistryError> {
        match &self.inner.backend {
            Backend::Embedded(store) => {
                let store = store.clone();
                blocking(move || store.registrations()).await
            }
            Backend::Redis(store) => store.registrations().await,
        }
    }

    async fn set_deployment_key(&self, key: [u8; 32]) -> Result<(), RegistryError> {
        let set = match &self.inner.backend {
            Backend::Embedded(store) => {
                let store = store.clone();
                blocking(move || store.set_deployment_key(&key)).await
            }
            Backend::Redis(store) => store.set_deployment_key(&key).await,
        };
        // Nodes derive from the key: nothing read under the old one stays.
        if let Some(cache) = &self.inner.cache {
            cache.clear();
        }
        set
    }

    async fn put_many(&self, batch: Vec<Registration>) -> Result<u64, RegistryError> {
        let written = batch.len() as u64;
        if batch.is_empty() {
            return Ok(0);
        }
        let nodes: Vec<String> = batch.iter().map(|r| r.node.clone()).collect();
        match &self.inner.backend {
            Backend::Embedded(store) => {
                let store = store.clone();
                blocking(move || store.put_many(&batch)).await?;
            }
            Backend::Redis(store) => {
                let values = batch
                    .iter()
                    .map(|r| Ok((r.node.clone(), encode(r)?)))
                    .collect::<Result<Vec<_>, RegistryError>>()?;
                store.put_many(values).await?;
                let mut by_account = std::collections::BTreeMap::<String, Vec<String>>::new();
                for r in &batch {
                    by_account
                        .entry(r.account_hash.clone())
                        .or_default()
                        .push(r.node.clone());
                }
                store.add_account_nodes(by_account).await?;
            }
        }
        if let Some(cache) = &self.inner.cache {
            nodes.iter().for_each(|node| cache.invalidate(node));
        }
        Ok(written)
    }
}

fn write_line(out: &mut impl Write, line: &ExportLine) -> Result<(), TransferError> {
    serde_json::to_writer(&mut *out, line).map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    Ok(())
}
