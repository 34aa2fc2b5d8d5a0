//! Flag groups shared by several subcommands (`#[command(flatten)]`), each turned into the typed
//! settings of a library crate.

use std::path::PathBuf;

use tapedeck_common::{RedactMode, RedactRules, Redactor, RuleRedactor};
use tapedeck_storage::{Exchange, flags};

/// How secrets are redacted before an exchange is written to a tape: the same flags (and, for
/// `record`, config keys) for every way into a tape — `record`, `import-har`, `synth` and the
/// tapes `ticket` bundles. The default sensitive headers (authorization, cookie, set-cookie,
/// x-api-key…) are always redacted.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct RedactArgs {
    /// Also redact this header (repeatable; authorization, cookie, set-cookie, x-api-key… always).
    #[arg(long = "redact-header", value_name = "NAME")]
    pub(crate) redact_headers: Vec<String>,
    /// Redact the {…} segments of paths matching this template (repeatable):
    /// /reset-password/{token}, /v1/orgs/*/keys/{key}/** (* and ** match and keep).
    #[arg(long = "redact-path", value_name = "TEMPLATE")]
    pub(crate) redact_path: Vec<String>,
    /// Redact this query parameter (repeatable; also in form bodies).
    #[arg(long = "redact-query", value_name = "NAME")]
    pub(crate) redact_query: Vec<String>,
    /// Redact JSON body fields at this path (repeatable): $.password, $..card_number.
    #[arg(long = "redact-json", value_name = "PATH")]
    pub(crate) redact_json: Vec<String>,
    /// Redact matches of this regex in bodies (repeatable).
    #[arg(long = "redact-regex", value_name = "REGEX")]
    pub(crate) redact_regex: Vec<String>,
    /// `mask` (placeholder) or `hash` (keyed HMAC-SHA256 token) [default: mask].
    #[arg(long, value_enum, value_name = "MODE")]
    pub(crate) redact_mode: Option<RedactModeArg>,
    /// Environment variable with the hash key [default: TAPEDECK_REDACT_KEY].
    #[arg(long, value_name = "VAR")]
    pub(crate) redact_key_env: Option<String>,
    /// File with the hash key.
    #[arg(long, value_name = "FILE")]
    pub(crate) redact_key_file: Option<PathBuf>,
}

/// `--redact-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RedactModeArg {
    /// A fixed placeholder.
    Mask,
    /// A keyed HMAC-SHA256 token: equal secrets give equal tokens.
    Hash,
}

impl From<RedactModeArg> for RedactMode {
    fn from(m: RedactModeArg) -> Self {
        match m {
            RedactModeArg::Mask => RedactMode::Mask,
            RedactModeArg::Hash => RedactMode::Hash,
        }
    }
}

impl RedactArgs {
    /// The rules as the library takes them.
    pub(crate) fn rules(&self) -> RedactRules {
        RedactRules {
            headers: self.redact_headers.clone(),
            path: self.redact_path.clone(),
            query: self.redact_query.clone(),
            json: self.redact_json.clone(),
            regex: self.redact_regex.clone(),
            mode: self.redact_mode.map(RedactMode::from).unwrap_or_default(),
            key_env: self.redact_key_env.clone(),
            key_file: self.redact_key_file.clone(),
        }
    }

    /// The checked redactor (a bad rule or a missing hash key is an error naming the flag).
    pub(crate) fn redactor(&self) -> anyhow::Result<RuleRedactor> {
        self.rules()
            .build(tapedeck_common::redact::DEFAULT_DECODED_LIMIT)
            .map_err(|e| anyhow::anyhow!("--{}: {e}", e.key()))
    }
}

/// Redacts `ex` in place and flags it, as the recorder does.
pub(crate) fn redact(redactor: &RuleRedactor, ex: &mut Exchange) {
    if redactor.redact(ex) {
        ex.flags |= flags::REDACTED;
    }
}

/// Changes made to every replayed request (`replay`, `check`, `serve`'s check flags).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct RequestFlags {
    /// Set a header on every request: 'Name: value'; ${VAR} reads an environment variable
    /// (stored on the result tape unexpanded). Replaces recorded headers of that name.
    #[arg(long = "set-header", value_name = "'NAME: VALUE'")]
    set_headers: Vec<String>,
    /// Remove a header from every request (repeatable).
    #[arg(long = "drop-header", value_name = "NAME")]
    drop_headers: Vec<String>,
    /// Refuse to start (exit 2, nothing sent) when requests would carry the placeholder the
    /// recorder wrote for a redacted credential ([REDACTED], hmac-sha256:…) that no
    /// --set-header or --drop-header replaces. Without it: a warning, and counts in the summary.
    #[arg(long)]
    strict_credentials: bool,
}

impl RequestFlags {
    /// Sets the request changes of `options`.
    pub(crate) fn apply(&self, options: &mut tapedeck_replay::ReplayOptions) {
        options.set_headers = self.set_headers.clone();
        options.drop_headers = self.drop_headers.clone();
        options.strict_credentials = self.strict_credentials;
    }
}

/// Which exchanges of a tape: methods, path globs, time range (`replay`, `check`, `export-har`).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct TapeFilterFlags {
    /// Only these methods (repeatable or comma-separated).
    #[arg(long = "method", value_name = "METHOD", value_delimiter = ',')]
    pub(crate) methods: Vec<String>,
    /// Only paths matching this glob, e.g. '/api/users/*' (repeatable).
    #[arg(long = "route", value_name = "GLOB")]
    pub(crate) routes: Vec<String>,
    /// Only exchanges recorded at or after this time (RFC 3339 or µs since the epoch).
    #[arg(long, value_name = "TIME")]
    pub(crate) from: Option<String>,
    /// Only exchanges recorded before this time (RFC 3339 or µs since the epoch).
    #[arg(long, value_name = "TIME")]
    pub(crate) to: Option<String>,
}

/// Which recorded exchanges are replayed, and the safety switches (`replay`, `check`, `serve`'s
/// check flags).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct SelectFlags {
    #[command(flatten)]
    filter: TapeFilterFlags,
    /// Replay at most N recorded exchanges.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Replay this fraction of exchanges (0 < F ≤ 1), chosen deterministically by id.
    #[arg(long, value_name = "F")]
    sample: Option<f64>,
    /// Also replay unsafe methods (POST, PUT, PATCH, DELETE…). Off by default: a replay must not
    /// mutate a shared system by surprise.
    #[arg(long)]
    allow_writes: bool,
    /// Allow a target that is the host the tape was recorded from.
    #[arg(long)]
    allow_same_host: bool,
    /// Skip damaged tape files instead of stopping.
    #[arg(long)]
    skip_corrupt: bool,
}

impl SelectFlags {
    /// Sets the selection and safety switches of `options`.
    pub(crate) fn apply(&self, options: &mut tapedeck_replay::ReplayOptions) {
        options.methods = self.filter.methods.clone();
        options.routes = self.filter.routes.clone();
        options.from = self.filter.from.clone();
        options.to = self.filter.to.clone();
        options.limit = self.limit;
        options.sample = self.sample;
        options.allow_writes = self.allow_writes;
        options.allow_same_host = self.allow_same_host;
        options.skip_corrupt = self.skip_corrupt;
    }
}

/// The judge's rules and strictness (`check`, and `serve` for every run).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct JudgeFlags {
    /// Rules file (TOML) for the judge.
    #[arg(long, value_name = "FILE")]
    pub(crate) rules: Option<PathBuf>,
    /// Latency objective for the candidate, e.g. 'GET /api/users: p95<300ms' (repeatable).
    #[arg(long, value_name = "SLO")]
    pub(crate) slo: Vec<String>,
    /// Treat a marginal verdict as a failure.
    #[arg(long)]
    pub(crate) strict: bool,
}

impl JudgeFlags {
    /// Adds `outer`'s settings (`serve`'s own flags) to these (its check flags after `--`).
    pub(crate) fn merge(&mut self, outer: &JudgeFlags) -> anyhow::Result<()> {
        if let Some(rules) = &outer.rules {
            anyhow::ensure!(
                self.rules.is_none(),
                "--rules is given both before and after `--`"
            );
            self.rules = Some(rules.clone());
        }
        self.slo.splice(0..0, outer.slo.iter().cloned());
        self.strict |= outer.strict;
        Ok(())
    }
}
