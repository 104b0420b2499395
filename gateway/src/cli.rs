//! The command line: `gateway` (or `gateway serve`) serves; `gateway token --user ID [--ttl
//! SECONDS]` prints a token signed with `JWT_SECRET` (or embedded mode's generated secret), for
//! development; `gateway check-config` says whether the environment makes a valid configuration.
//! `--help` lists every setting (`shared::config::SETTINGS`).

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use shared::auth::JwtKey;
use shared::config::{GatewayConfig, ReadBy, RedisTarget};

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "Real-time WebSocket gateway: serves the apps' sockets and the server API."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Serve (the default): embedded mode without REDIS_URL, a cluster node with it.
    Serve,
    /// Print a token for a user, signed with JWT_SECRET (development).
    Token {
        #[arg(long)]
        user: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
    /// Check the settings in the environment; exits non-zero naming what is missing or wrong.
    CheckConfig,
}

/// Parses the arguments (without the program name). `Err` holds clap's text: usage, help or
/// version, to be printed as it is.
pub(crate) fn parse(args: &[String]) -> Result<Command, clap::Error> {
    let command = Cli::command().after_help(shared::config::settings_help(ReadBy::Gateway));
    let matches = command.try_get_matches_from(std::iter::once("gateway".to_owned()).chain(args.iter().cloned()))?;
    let cli = Cli::from_arg_matches(&matches)?;
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Token { user, .. } = &command {
        shared::ids::UserId::parse(user)
            .map_err(|e| Cli::command().error(clap::error::ErrorKind::ValueValidation, format!("--user {e}")))?;
    }
    Ok(command)
}

/// What `check-config` prints for a valid configuration.
pub(crate) fn describe(config: &GatewayConfig) -> String {
    let mode = match &config.redis {
        None => format!(
            "embedded mode, data in {}",
            config.data_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default()
        ),
        Some(RedisTarget::Single(_)) => "cluster mode on one Redis (REDIS_URL and DATABASE_URL set)".to_owned(),
        Some(target @ RedisTarget::Cluster(_)) => format!(
            "cluster mode on a Redis Cluster ({}; REDIS_CLUSTER_NODES and DATABASE_URL set), replica acks {}",
            target.describe(),
            config.replica_acks
        ),
    };
    format!("configuration OK: {mode}; listening on {}", config.bind)
}

pub(crate) fn token(config: &GatewayConfig, user: &str, ttl: i64) -> Result<String, String> {
    match &config.jwt {
        JwtKey::Hs256(secret) => Ok(shared::auth::issue_hs256(secret, user, ttl)),
        _ => Err("gateway token signs with JWT_SECRET (HS256); with a public key, tokens come from your issuer".into()),
    }
}

/// What embedded mode prints at start: what it is, what it guarantees, and the first steps.
pub(crate) fn embedded_banner(config: &GatewayConfig, port: u16) -> String {
    let dir = config.data_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default();
    let secret = match &config.jwt {
        JwtKey::Hs256(s) => s.as_str(),
        _ => "(public key)",
    };
    let mut out = format!(
        "embedded mode: one process with an in-process broker and worker; database {db}\n\
         \x20 guarantees: every accepted message is written to the database once, a crash included: it is\n\
         \x20 journaled in the same file before anyone sees it. Set REDIS_URL for cluster mode.\n",
        db = config.database_url,
    );
    for name in &config.generated {
        out.push_str(&format!("  generated {name} (kept in {dir})\n"));
    }
    out.push_str(&format!(
        "  GATEWAY_API_KEY={key}\n  JWT_SECRET={secret}\n\n\
         create a user:\n  curl -X PUT http://localhost:{port}/api/v1/users/alice \\\n    \
         -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n    \
         -d '{{\"username\": \"alice\", \"display_name\": \"Alice\"}}'\n\
         get a token:\n  cargo run --release --bin gateway -- token --user alice\n",
        key = config.api_key,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn help_lists_every_gateway_setting() {
        let help = parse(&args(&["--help"])).err().expect("--help is not a command").to_string();
        for setting in ["GATEWAY_BIND", "REDIS_URL", "JWT_SECRET", "GATEWAY_GROUP_WINDOW", "LOG_FORMAT"] {
            assert!(help.contains(setting), "{setting} missing from --help:\n{help}");
        }
        assert!(!help.contains("WORKER_BATCH"), "a worker setting in the gateway's help");
    }

    #[test]
    fn parses_the_token_command() {
        assert!(matches!(parse(&[]), Ok(Command::Serve)));
        match parse(&args(&["token", "--user", "alice", "--ttl", "60"])) {
            Ok(Command::Token { user, ttl }) => assert_eq!((user.as_str(), ttl), ("alice", 60)),
            _ => panic!("token command not parsed"),
        }
        assert!(parse(&args(&["token"])).is_err());
        assert!(parse(&args(&["token", "--user", "bad id"])).is_err());
        assert!(matches!(parse(&args(&["serve"])), Ok(Command::Serve)));
        assert!(matches!(parse(&args(&["check-config"])), Ok(Command::CheckConfig)));
        assert!(parse(&args(&["nonsense"])).is_err());
    }

    #[test]
    fn the_printed_token_verifies() {
        let key = JwtKey::Hs256("s3cret".into());
        let config = GatewayConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            redis: None,
            replica_acks: 0,
            database_url: "sqlite::memory:".into(),
            jwt: key.clone(),
            api_key: "k".into(),
            anonymous_personal: false,
            limits: Default::default(),
            redis_prefix: "rt:".into(),
            window: Default::default(),
            data_dir: None,
            generated: Vec::new(),
        };
        let token = token(&config, "alice", 60).unwrap();
        let claims = shared::auth::Verifier::new(&key).unwrap().verify(&token).unwrap();
        assert_eq!(claims.user_id.as_str(), "alice");
    }
}
