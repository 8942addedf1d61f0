//! `edgeplan token`: a bearer token for `serve`'s `auth.tokens`.

use anyhow::Result;

use edgeplan::service::auth::{new_token, token_sha256, Role, TokenConfig};

#[derive(clap::Args)]
pub struct Args {
    /// Who holds it; denials are logged under this name.
    #[arg(long)]
    pub name: String,
    #[arg(long, value_enum)]
    pub role: Role,
}

pub fn run(args: Args) -> Result<()> {
    let token = new_token();
    let entry = TokenConfig {
        name: args.name,
        role: args.role,
        sha256: token_sha256(&token),
    };
    println!("{token}");
    eprintln!(
        "give the token above to its holder; add this under auth.tokens in serve.yaml:\n  - {}",
        serde_json::to_string(&entry)?
    );
    Ok(())
}
