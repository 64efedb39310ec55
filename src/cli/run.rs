//! `herald run`: the processor plus its HTTP server.

use anyhow::Context;

use crate::app::App;
use crate::settings::Settings;
use crate::settings::interpolate::Vars;

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let listen = settings.http.listen.clone();
    let app = App::start(settings, Vars::from_env()).context("cannot start the processor")?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on http.listen = {listen}"))?;
    tracing::info!(address = %listen, "HTTP server listening");
    let shutdown = super::shutdown_signal();
    let mut http_stop = shutdown.clone();
    let server = tokio::spawn(
        axum::serve(listener, app.http_routes())
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|s| *s).await;
            })
            .into_future(),
    );
    app.run_processor(shutdown).await?;
    let _ = server.await;
    Ok(())
}
