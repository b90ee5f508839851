//! placeholder: replaced below
use clap::Args;
#[derive(Args, Debug)]
pub struct Options {}
pub fn run(_o: &Options) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
