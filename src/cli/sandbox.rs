//! `herald sandbox`: the destination simulators on their own.

use anyhow::Context;
use clap::Args;
use herald_sandbox::Sandbox;

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: String,
    /// Verify webhook signatures with this `whsec_…` secret.
    #[arg(long, env = "HERALD_SANDBOX_WEBHOOK_SECRET")]
    webhook_secret: Option<String>,
}

pub async fn serve(args: SandboxArgs) -> anyhow::Result<()> {
    let sandbox = Sandbox::new(args.webhook_secret.as_deref())
        .map_err(|e| anyhow::anyhow!("--webhook-secret: {e}"))?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("sandbox: http://{}", listener.local_addr()?);
    let mut stop = super::shutdown_signal();
    axum::serve(listener, sandbox.router())
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await?;
    Ok(())
}
