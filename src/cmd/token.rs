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
    /// The only sites whose readings it may write (a site gateway's token:
    /// `--site madrid-1`); repeat for more. None: every site.
    #[arg(long = "site")]
    pub sites: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    let token = new_token();
    let entry = TokenConfig {
        name: args.name,
        role: args.role,
        sha256: token_sha256(&token),
        sites: args.sites,
    };
    println!("{token}");
    eprintln!(
        "give the token above to its holder; add this under auth.tokens in serve.yaml (or in auth.tokens_file, re-read when it changes):\n  - {}",
        serde_json::to_string(&entry)?
    );
    Ok(())
}
