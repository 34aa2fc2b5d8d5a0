//! Object storage: tapes, runs and reports at `s3://`, `gs://`, `az://` and `file://` URLs.
//!
//! A *location* is either a plain local path (the tape directory, exactly as before) or an
//! object-store URL: `scheme://bucket/prefix`. The tape's files live under the prefix with the
//! same relative keys they have in a local tape (`date=YYYY-MM-DD/hour=HH/part-<id>.parquet`), so
//! partition pruning, projection and row-group statistics work alike, and DuckDB / Spark / Trino
//! read the prefix directly. Only sealed Parquet files are ever stored remotely: the spool stays
//! on local disk (see [`spool_dir_for`]).
//!
//! Stores are built from the URL and the environment, as `object_store`'s builders read it:
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
//! `AWS_ALLOW_HTTP`, … for `s3://`; `GOOGLE_SERVICE_ACCOUNT`, … for `gs://`;
//! `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, … for `az://`. `file:///abs/path`
//! goes through the same object-store code path on the local file system (handy for tests and
//! mounted buckets).
//!
//! The public API of the storage crate stays synchronous: requests run on one private,
//! lazily started tokio runtime (two worker threads named `tapedeck-objstore`) and the calling
//! thread waits on a plain channel. That is safe from any thread, including a worker thread of
//! the caller's own tokio runtime (which is blocked meanwhile, as by any synchronous file read).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use object_store::path::Path as ObjPath;
use object_store::{
    BackoffConfig, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};

use crate::error::{Result, StorageError};

/// Environment variable naming the directory under which writers to a remote location keep
/// their local spool and sealed files until they are uploaded (default: the system temp dir's
/// `tapedeck-spool`). Each remote location gets its own subdirectory, named after its URL.
pub const SPOOL_ROOT_ENV: &str = "TAPEDECK_SPOOL_DIR";

/// Whether `s` is written as a URL (`scheme://…`) rather than a local path.
pub fn is_url(s: &str) -> bool {
    let Some((scheme, _)) = s.split_once("://") else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Whether a path argument is really an object-store URL (see [`is_url`]).
pub fn path_is_url(p: &Path) -> bool {
    p.to_str().is_some_and(is_url)
}

/// Where a tape, run or report lives.
#[derive(Debug, Clone)]
pub enum Location {
    /// A local directory or file.
    Local(PathBuf),
    /// A prefix in an object store.
    Remote(Remote),
}

impl Location {
    /// A plain path is [`Location::Local`]; `scheme://…` is parsed as an object-store URL
    /// (errors name the URL: unknown scheme, missing bucket, bad credentials settings).
    pub fn parse(s: &str) -> Result<Location> {
        if is_url(s) {
            Remote::parse(s).map(Location::Remote)
        } else {
            Ok(Location::Local(PathBuf::from(s)))
        }
    }

    /// [`Location::parse`] for a path argument (a non-UTF-8 path is always local).
    pub fn from_path(p: &Path) -> Result<Location> {
        match p.to_str() {
            Some(s) => Location::parse(s),
            None => Ok(Location::Local(p.to_owned())),
        }
    }
}

/// A prefix in an object store, with the store to reach it.
#[derive(Clone)]
pub struct Remote {
    url: String,
    base: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjPath,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).finish()
    }
}

fn bad(url: &str, reason: impl Into<String>) -> StorageError {
    StorageError::BadLocation {
        url: url.to_owned(),
        reason: reason.into(),
    }
}

/// An `http://` endpoint (MinIO, moto, a local gateway) is refused by the S3 client at every
/// request unless `AWS_ALLOW_HTTP` is true, which shows up only as "builder error" after the
/// retries (issue 17): say so at once, naming the endpoint and the setting.
fn check_plain_http(url: &str, b: &object_store::aws::AmazonS3Builder) -> Result<()> {
    use object_store::ClientConfigKey;
    use object_store::aws::AmazonS3ConfigKey as K;
    let Some(endpoint) = b
        .get_config_value(&K::S3Endpoint)
        .or_else(|| b.get_config_value(&K::Endpoint))
    else {
        return Ok(());
    };
    let plain = endpoint
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
    let allowed = b
        .get_config_value(&K::Client(ClientConfigKey::AllowHttp))
        .is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "on" | "yes" | "y"
            )
        });
    if plain && !allowed {
        return Err(bad(
            url,
            format!(
                "the S3 endpoint {endpoint} is plain HTTP, which the S3 client refuses unless \
                 AWS_ALLOW_HTTP=true is set (fine for a local MinIO or moto; otherwise use an \
                 https:// endpoint)"
            ),
        ));
    }
    Ok(())
}

/// Retries inside one request are few and short: the uploader retries whole files itself, with
/// its own backoff, and a reader should fail in seconds, not minutes, when the store is down.
fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_secs(20),
    }
}

impl Remote {
    /// Parses `scheme://bucket/prefix` and builds the store from the URL and the environment.
    pub fn parse(url: &str) -> Result<Remote> {
        let parsed = url::Url::parse(url).map_err(|e| bad(url, format!("not a URL: {e}")))?;
        let scheme = parsed.scheme();
        let host = parsed.host_str().unwrap_or("");
        let needs_bucket = || {
            if host.is_empty() {
                Err(bad(
                    url,
                    format!("no bucket in the URL (expected {scheme}://BUCKET/PREFIX)"),
                ))
            } else {
                Ok(())
            }
        };
        let built = |r: object_store::Result<Arc<dyn ObjectStore>>| {
            r.map_err(|e| bad(url, format!("cannot set up the object store: {e}")))
        };
        let store: Arc<dyn ObjectStore> = match scheme {
            "s3" | "s3a" => {
                needs_bucket()?;
                let builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .with_retry(retry_config());
                check_plain_http(url, &builder)?;
                built(builder.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>))?
            }
            "gs" => {
                needs_bucket()?;
                built(
                    object_store::gcp::GoogleCloudStorageBuilder::from_env()
                        .with_url(url)
                        .with_retry(retry_config())
                        .build()
                        .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
                )?
            }
            "az" | "azure" | "abfs" | "abfss" => {
                needs_bucket()?;
                built(
                    object_store::azure::MicrosoftAzureBuilder::from_env()
                        .with_url(url)
                        .with_retry(retry_config())
                        .build()
                        .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
                )?
            }
            "http" | "https" => {
                // A WebDAV server (RFC 4918: nginx with dav_ext, Apache mod_dav, Artifactory,
                // Nextcloud…); the URL's path is the key prefix. Plain http is the user's
                // explicit choice here, so it is allowed. Credentials in the URL are refused:
                // the URL is printed in logs, summaries and reports.
                if !parsed.username().is_empty() || parsed.password().is_some() {
                    return Err(bad(
                        url,
                        "credentials in a WebDAV URL would be printed in logs and reports;                          use a server reachable without them (network policy, a local proxy)",
                    ));
                }
                let mut builder = object_store::http::HttpBuilder::new()
                    .with_url(&parsed[..url::Position::BeforePath])
                    .with_retry(retry_config());
                if scheme == "http" {
                    builder = builder.with_config(object_store::ClientConfigKey::AllowHttp, "true");
                }
                built(builder.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>))?
            }
            "file" => {
                if !host.is_empty() && host != "localhost" {
                    return Err(bad(
                        url,
                        "a file:// URL must name a local absolute path (file:///abs/path)",
                    ));
                }
                Arc::new(object_store::local::LocalFileSystem::new())
            }
            other => {
                return Err(bad(
                    url,
                    format!(
                        "unknown URL scheme `{other}://` (expected s3://, gs://, az://, https:// or http:// (WebDAV), file://, or a plain path)"
                    ),
                ));
            }
        };
        let prefix = ObjPath::from_url_path(parsed.path())
            .map_err(|e| bad(url, format!("bad object key prefix: {e}")))?;
        let base = parsed[..url::Position::BeforePath].to_owned();
        let url = if prefix.as_ref().is_empty() {
            base.clone()
        } else {
            format!("{base}/{prefix}")
        };
        Ok(Remote {
            url,
            base,
            store,
            prefix,
        })
    }

    /// The normalized URL (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The key prefix inside the store (may be empty: the whole bucket).
    pub fn prefix(&self) -> &ObjPath {
        &self.prefix
    }

    /// The key of `relative` (slash-separated, e.g. `date=…/hour=…/part-x.parquet`) under the
    /// prefix.
    pub fn key(&self, relative: &str) -> ObjPath {
        let mut parts: Vec<String> = self.prefix.parts().map(|p| p.as_ref().to_owned()).collect();
        parts.extend(
            relative
                .split('/')
                .filter(|s| !s.is_empty() && *s != ".")
                .map(str::to_owned),
        );
        ObjPath::from_iter(parts)
    }

    /// The URL of an object of this store.
    pub fn object_url(&self, key: &ObjPath) -> String {
        format!("{}/{}", self.base, key)
    }

    /// A location under this one (`relative` is slash-separated).
    pub fn child(&self, relative: &str) -> Remote {
        let prefix = self.key(relative);
        Remote {
            url: self.object_url(&prefix),
            base: self.base.clone(),
            store: self.store.clone(),
            prefix,
        }
    }

    /// Every object under the prefix (recursively), in key order.
    pub fn list(&self) -> Result<Vec<ObjectMeta>> {
        let store = self.store.clone();
        let prefix = self.prefix.clone();
        let mut objects = block_on(async move {
            let mut out = Vec::new();
            let mut stream = store.list(Some(&prefix));
            while let Some(meta) = stream.next().await {
                out.push(meta?);
            }
            Ok::<_, object_store::Error>(out)
        })
        .map_err(|e| bad(&self.url, e))?
        .map_err(|e| self.remote_err("list", &self.prefix, e))?;
        objects.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(objects)
    }

    /// The size of one object, `None` when it does not exist.
    pub fn head(&self, key: &ObjPath) -> Result<Option<u64>> {
        let store = self.store.clone();
        let k = key.clone();
        match block_on(async move { store.head(&k).await }).map_err(|e| bad(&self.url, e))? {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.remote_err("head", key, e)),
        }
    }

    /// Reads a whole object.
    pub fn read(&self, key: &ObjPath) -> Result<Bytes> {
        let store = self.store.clone();
        let k = key.clone();
        block_on(async move { store.get(&k).await?.bytes().await })
            .map_err(|e| bad(&self.url, e))?
            .map_err(|e| self.remote_err("get", key, e))
    }

    /// Uploads a local file to `relative` under the prefix and confirms it: the `PUT` succeeded
    /// and a `HEAD` reports the file's size. Returns the bytes uploaded.
    pub fn upload_file(&self, local: &Path, relative: &str) -> Result<u64> {
        let data = std::fs::read(local).map_err(|e| StorageError::io("read", local, e))?;
        let len = data.len() as u64;
        let key = self.key(relative);
        let store = self.store.clone();
        let k = key.clone();
        block_on(async move { store.put(&k, PutPayload::from(Bytes::from(data))).await })
            .map_err(|e| bad(&self.url, e))?
            .map_err(|e| self.remote_err("put", &key, e))?;
        match self.head(&key)? {
            Some(n) if n == len => Ok(len),
            Some(n) => Err(bad(
                &self.object_url(&key),
                format!("uploaded {len} bytes but the store holds {n}"),
            )),
            None => Err(bad(
                &self.object_url(&key),
                "uploaded but the store does not list the object",
            )),
        }
    }

    /// Uploads every file under a local directory (recursively) to the same relative keys under
    /// the prefix. Returns the object URLs written, in order.
    pub fn upload_dir(&self, local: &Path) -> Result<Vec<String>> {
        let mut files = Vec::new();
        collect_files(local, local, &mut files)?;
        files.sort();
        let mut urls = Vec::with_capacity(files.len());
        for rel in files {
            let path = local.join(&rel);
            self.upload_file(&path, &rel)?;
            urls.push(self.object_url(&self.key(&rel)));
        }
        Ok(urls)
    }

    fn remote_err(&self, op: &'static str, key: &ObjPath, e: object_store::Error) -> StorageError {
        StorageError::Remote {
            op,
            url: self.object_url(key),
            source: Box::new(e),
        }
    }
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| StorageError::io("list", dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| StorageError::io("list", dir, e))?;
        let path = entry.path();
        let ft = entry
            .file_type()
            .map_err(|e| StorageError::io("stat", &path, e))?;
        if ft.is_dir() {
            collect_files(root, &path, out)?;
        } else if ft.is_file()
            && let Ok(rel) = path.strip_prefix(root)
            && let Some(rel) = rel.to_str()
        {
            out.push(rel.replace(std::path::MAIN_SEPARATOR, "/"));
        }
    }
    Ok(())
}

/// A directory that output files (reports, rules) are written into, for a local path or an
/// object-store URL: for a URL the files are written to a private local staging directory and
/// uploaded, under the same names, by [`OutputDir::finish`].
#[derive(Debug)]
pub struct OutputDir {
    local: PathBuf,
    remote: Option<Remote>,
}

impl OutputDir {
    /// A local path is used as it is (its creation is left to the writer of the files); a URL
    /// gets a fresh staging directory under the system temp dir.
    pub fn new(target: &Path) -> Result<OutputDir> {
        match Location::from_path(target)? {
            Location::Local(p) => Ok(OutputDir {
                local: p,
                remote: None,
            }),
            Location::Remote(r) => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                let local = std::env::temp_dir()
                    .join(format!("tapedeck-out-{}-{nanos}", std::process::id()));
                crate::layout::create_private_dir(&local)
                    .map_err(|e| StorageError::io("create", &local, e))?;
                Ok(OutputDir {
                    local,
                    remote: Some(r),
                })
            }
        }
    }

    /// Where to write the files now.
    pub fn path(&self) -> &Path {
        &self.local
    }

    /// The URL the files go to, when remote.
    pub fn remote_url(&self) -> Option<&str> {
        self.remote.as_ref().map(Remote::url)
    }

    /// Uploads the staged files (for a URL) and removes the staging directory. Returns the
    /// object URLs written (empty for a local directory).
    pub fn finish(mut self) -> Result<Vec<String>> {
        let Some(remote) = self.remote.take() else {
            return Ok(Vec::new());
        };
        let urls = remote.upload_dir(&self.local);
        let _ = std::fs::remove_dir_all(&self.local);
        urls
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        if self.remote.is_some() {
            let _ = std::fs::remove_dir_all(&self.local);
        }
    }
}

/// The local directory a writer to `url` spools into: `$TAPEDECK_SPOOL_DIR/<name>` (or the system
/// temp dir's `tapedeck-spool/<name>`), where `<name>` is the URL made file-name safe plus a
/// short hash, so that every remote location has its own spool and a restarted writer finds
/// (and uploads) what an earlier one left.
pub fn spool_dir_for(url: &str) -> PathBuf {
    let root = std::env::var_os(SPOOL_ROOT_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("tapedeck-spool"));
    let mut safe: String = url
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    // FNV-1a: stable across builds, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in url.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    safe.push_str(&format!("-{:08x}", h as u32));
    root.join(safe)
}

/// An [`AsyncFileReader`](parquet::arrow::async_reader::AsyncFileReader) over one object of
/// known size: ranged GETs for the footer and for the column chunks a scan needs (projection and
/// row-group pruning decide which), coalesced by the store.
#[derive(Debug, Clone)]
pub(crate) struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    key: ObjPath,
    size: u64,
}

impl ObjectReader {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, key: ObjPath, size: u64) -> Self {
        Self { store, key, size }
    }
}

fn parquet_err(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl parquet::arrow::async_reader::AsyncFileReader for ObjectReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.key, range)
                .await
                .map_err(parquet_err)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.key, &ranges)
                .await
                .map_err(parquet_err)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a parquet::arrow::arrow_reader::ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<parquet::file::metadata::ParquetMetaData>>> {
        async move {
            let size = self.size;
            let md = parquet::file::metadata::ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(md))
        }
        .boxed()
    }
}

/// The private runtime object-store requests run on.
fn runtime() -> std::result::Result<&'static tokio::runtime::Runtime, String> {
    static RT: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tapedeck-objstore")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the object-store runtime: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Runs `fut` on the private runtime and waits for it on the calling thread. `Err` when the
/// runtime cannot start or the future panicked (the parquet decoder does on some damaged pages).
pub(crate) fn block_on<F>(fut: F) -> std::result::Result<F::Output, String>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let rt = runtime()?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let task = rt.spawn(fut);
    rt.spawn(async move {
        let _ = tx.send(task.await);
    });
    match rx.recv() {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if e.is_panic() => Err("the request panicked (damaged data?)".to_owned()),
        Ok(Err(e)) => Err(format!("the request was cancelled: {e}")),
        Err(_) => Err("the object-store runtime stopped".to_owned()),
    }
}

#[cfg(test)]
mod tests;
