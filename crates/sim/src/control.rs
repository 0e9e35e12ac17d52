//! A line protocol to drive a fleet that runs in another process (`dbfleet bench sim-serve`),
//! so that a benchmark can measure the control plane's CPU apart from the simulation's.
//!
//! Requests, one per line on the input: `hang ADDR`, `refuse ADDR`, `heal ADDR`,
//! `stop-replication ADDR`, `start-replication ADDR`, `track INTERVAL_MS`, `report`, `stats`,
//! `quit`. Each gets one line back: `ok`, `error: …`, or as JSON the
//! [`ProbeReport`](crate::ProbeReport) for `report` and the [`SimStats`](crate::SimStats) for
//! `stats`. The end
//! of the input stops the fleet, so a fleet never outlives the process that drives it.

use model::InstanceAddr;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

use crate::Fleet;

/// Answer requests from `input` on `output` until `quit` or the end of the input.
pub async fn serve_control<R, W>(fleet: &Fleet, input: R, mut output: W) -> anyhow::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut lines = input.lines();
    while let Some(line) = lines.next_line().await? {
        let mut words = line.split_whitespace();
        let (Some(verb), arg) = (words.next(), words.next()) else {
            continue;
        };
        if verb == "quit" {
            output.write_all(b"ok\n").await?;
            break;
        }
        let reply = match (verb, arg) {
            ("stats", _) => Ok(serde_json::to_string(&fleet.stats())?),
            ("report", _) => Ok(serde_json::to_string(&fleet.probe_report())?),
            ("track", Some(ms)) => match ms.parse::<u64>() {
                Ok(ms) => {
                    fleet.track_probes(std::time::Duration::from_millis(ms));
                    Ok("ok".to_string())
                }
                Err(e) => Err(anyhow::anyhow!("track {ms}: {e}")),
            },
            (_, None) => Err(anyhow::anyhow!("{verb} needs an address")),
            (_, Some(a)) => match a.parse::<InstanceAddr>() {
                Err(e) => Err(anyhow::anyhow!("{a}: {e}")),
                Ok(addr) => match verb {
                    "hang" => fleet.hang(&addr),
                    "refuse" => fleet.refuse(&addr),
                    "heal" => fleet.heal(&addr),
                    "stop-replication" => fleet.stop_replication(&addr),
                    "start-replication" => fleet.start_replication(&addr),
                    _ => Err(anyhow::anyhow!("unknown request {verb:?}")),
                }
                .map(|()| "ok".to_string()),
            },
        };
        let text = match reply {
            Ok(t) => t,
            Err(e) => format!("error: {e:#}"),
        };
        output.write_all(text.as_bytes()).await?;
        output.write_all(b"\n").await?;
        output.flush().await?;
    }
    Ok(())
}
