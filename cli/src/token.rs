//! `skiff token create|list|delete`: join tokens beyond the cluster's
//! server token, kept by the masters as `bootstrap-token-<id>` Secrets in
//! `kube-system` (only a hash of each secret is stored).

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use skiff_master::client::Client;
use skiff_master::security::tokens::{self, TOKEN_NAMESPACE};
use skiff_objects::Kind;
use skiff_security::{Credentials, JoinToken, TokenUsage};

use crate::ctl::{self, CtlError};

/// Flags of `skiff token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// Master API address (HOST:PORT or https://HOST:PORT); overrides the
    /// config file.
    #[arg(long, global = true, env = "SKIFF_SERVER")]
    pub server: Option<String>,
    /// Credential file (a master's admin.conf, or any kubeconfig): its
    /// current context is used. Default: $SKIFF_CONFIG, then the first
    /// existing file in $KUBECONFIG, then ~/.skiff/config, then
    /// /etc/skiff/admin.conf.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: TokenCommand,
}

/// Who may join with a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Usage {
    /// Agents (nodes) only.
    Agent,
    /// Masters too: whoever holds it receives the cluster CA.
    Server,
}

impl From<Usage> for TokenUsage {
    fn from(usage: Usage) -> TokenUsage {
        match usage {
            Usage::Agent => TokenUsage::Agent,
            Usage::Server => TokenUsage::Server,
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Make a new join token and print it (the only time it is shown).
    Create {
        /// How long it works; 0 = until deleted.
        #[arg(long, default_value = "24h")]
        ttl: humantime::Duration,
        /// Who may join with it: agent, or server (masters too).
        #[arg(long, value_enum, default_value_t = Usage::Agent)]
        usage: Usage,
        /// A note shown by `list`.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List tokens (ids, never secrets).
    List,
    /// Delete a token by id; it can no longer join anything.
    Delete {
        /// The token's id, as `list` shows it (<id> in K10…::<id>.<secret>).
        id: String,
    },
}

/// Runs a `token` command.
pub async fn run(args: TokenArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    skiff_security::install_crypto_provider();
    let path = ctl::credential_file(args.config.as_deref())?;
    let credentials = Credentials::load(&path).map_err(|e| CtlError::Config {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let client = ctl::connect(args.server.as_deref(), Some(&path))?;
    match args.command {
        TokenCommand::Create {
            ttl,
            usage,
            description,
        } => {
            let ca_hash =
                skiff_security::ca::ca_hash(&credentials.ca_pem).map_err(|e| CtlError::Config {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            create(
                &client,
                &ca_hash,
                usage.into(),
                ttl.into(),
                &description,
                out,
            )
            .await
        }
        TokenCommand::List => list(&client, out).await,
        TokenCommand::Delete { id } => delete(&client, &id, out).await,
    }
}

fn api(context: &str) -> impl FnOnce(skiff_master::client::ClientError) -> CtlError + '_ {
    move |source| CtlError::Api {
        context: context.to_owned(),
        source,
    }
}

async fn create(
    client: &Client,
    ca_hash: &str,
    usage: TokenUsage,
    ttl: Duration,
    description: &str,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let token = JoinToken::generate(ca_hash);
    let expires = (!ttl.is_zero()).then(|| SystemTime::now() + ttl);
    let secret = tokens::token_secret(&token, usage, expires, description);
    client
        .create(secret)
        .await
        .map_err(api("creating the token"))?;
    writeln!(out, "{token}")?;
    Ok(())
}

async fn list(client: &Client, out: &mut dyn Write) -> Result<(), CtlError> {
    let listed = client
        .list(Kind::Secret, TOKEN_NAMESPACE)
        .await
        .map_err(api("listing tokens"))?;
    let now = SystemTime::now();
    let mut rows = vec![vec![
        "ID".to_owned(),
        "USAGE".to_owned(),
        "EXPIRES".to_owned(),
        "DESCRIPTION".to_owned(),
    ]];
    for o in listed.items {
        let Some(r) = tokens::record(&o) else {
            continue;
        };
        let expires = match r.expires {
            None => "never".to_owned(),
            Some(at) if at <= now => "expired".to_owned(),
            Some(at) => skiff_objects::rfc3339(at),
        };
        rows.push(vec![
            r.id,
            r.usage.name().to_owned(),
            expires,
            r.description,
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("   ").trim_end())?;
    }
    Ok(())
}

async fn delete(client: &Client, id: &str, out: &mut dyn Write) -> Result<(), CtlError> {
    client
        .delete(Kind::Secret, TOKEN_NAMESPACE, &tokens::secret_name(id), "")
        .await
        .map_err(api("deleting the token"))?;
    writeln!(out, "token {id} deleted")?;
    Ok(())
}
