//! `herald completions SHELL` and `herald man`: shell completions and man pages generated from
//! the command definitions, so they never fall behind the commands.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use clap_complete::Shell;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for; source the output, e.g. `herald completions bash >
    /// /etc/bash_completion.d/herald`.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write `herald.1` and one page per subcommand (`herald-workspace-apply.1`, …) into this
    /// directory instead of printing `herald.1`.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

pub fn completions(mut command: clap::Command, args: &CompletionsArgs) {
    clap_complete::generate(args.shell, &mut command, "herald", &mut std::io::stdout());
}

pub fn man(command: clap::Command, args: &ManArgs) -> anyhow::Result<()> {
    match &args.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(command, dir)
                .with_context(|| format!("cannot write man pages to {}", dir.display()))?;
            eprintln!("wrote the man pages to {}", dir.display());
        }
        None => clap_mangen::Man::new(command).render(&mut std::io::stdout())?,
    }
    Ok(())
}
