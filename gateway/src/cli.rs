//! The command line: `gateway` serves; `gateway token --user ID [--ttl SECONDS]` prints a token
//! signed with `JWT_SECRET` (or embedded mode's generated secret), for development.

use shared::auth::JwtKey;
use shared::config::GatewayConfig;

pub enum Command {
    Serve,
    Token { user: String, ttl: i64 },
}

pub fn parse(args: &[String]) -> Result<Command, String> {
    let usage = "usage: gateway [token --user ID [--ttl SECONDS]]";
    match args.first().map(String::as_str) {
        None => Ok(Command::Serve),
        Some("token") => {
            let mut user = None;
            let mut ttl = 3600;
            let mut rest = args[1..].iter();
            while let Some(flag) = rest.next() {
                let value = rest.next().ok_or(usage)?;
                match flag.as_str() {
                    "--user" => user = Some(value.clone()),
                    "--ttl" => ttl = value.parse().map_err(|_| "--ttl takes a number of seconds".to_owned())?,
                    _ => return Err(usage.into()),
                }
            }
            let user = user.ok_or(usage)?;
            shared::ids::UserId::parse(&user).map_err(|e| format!("--user {e}"))?;
            Ok(Command::Token { user, ttl })
        }
        Some(_) => Err(usage.into()),
    }
}

pub fn token(config: &GatewayConfig, user: &str, ttl: i64) -> Result<String, String> {
    match &config.jwt {
        JwtKey::Hs256(secret) => Ok(shared::auth::issue_hs256(secret, user, ttl)),
        _ => Err("gateway token signs with JWT_SECRET (HS256); with a public key, tokens come from your issuer".into()),
    }
}

/// What embedded mode prints at start: what it is, what it guarantees, and the first steps.
pub fn embedded_banner(config: &GatewayConfig, port: u16) -> String {
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
    fn parses_the_token_command() {
        assert!(matches!(parse(&[]), Ok(Command::Serve)));
        match parse(&args(&["token", "--user", "alice", "--ttl", "60"])) {
            Ok(Command::Token { user, ttl }) => assert_eq!((user.as_str(), ttl), ("alice", 60)),
            _ => panic!("token command not parsed"),
        }
        assert!(parse(&args(&["token"])).is_err());
        assert!(parse(&args(&["token", "--user", "bad id"])).is_err());
        assert!(parse(&args(&["serve"])).is_err());
    }

    #[test]
    fn the_printed_token_verifies() {
        let key = JwtKey::Hs256("s3cret".into());
        let config = GatewayConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            redis_url: None,
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
