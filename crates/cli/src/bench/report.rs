//! What the runs of both protocols share: how long a connect may take, a run's phases and its
//! progress bar while it runs, and afterwards its report, errors on one line, and the table.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long a client waits to connect.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the progress bar is redrawn.
const PROGRESS_TICK: Duration = Duration::from_millis(500);

/// When a target's run starts, when its warmup ends and measuring starts, and when it ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Phases {
    pub(crate) start: Instant,
    pub(crate) measure_from: Instant,
    pub(crate) end: Instant,
}

/// A progress bar on stderr for a run of `total`, drawn by [`watch`].
pub(crate) fn progress_bar(total: Duration) -> anyhow::Result<ProgressBar> {
    let bar = ProgressBar::with_draw_target(Some(millis(total)), ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template("{bar:30} {msg}")?.progress_chars("=> "));
    Ok(bar)
}

/// Redraws the progress bar until the run ends, with the rate at which `done` grows.
pub(crate) async fn watch(phases: Phases, done: &AtomicU64, bar: &ProgressBar, label: &str) {
    let total = phases.end - phases.start;
    let (mut last_at, mut last_done) = (Instant::now(), 0);
    loop {
        tokio::time::sleep(PROGRESS_TICK).await;
        let now = Instant::now();
        let done = done.load(Ordering::Relaxed);
        let rate = (done - last_done) as f64 / (now - last_at).as_secs_f64();
        (last_at, last_done) = (now, done);
        let elapsed = (now - phases.start).min(total);
        let phase = if now < phases.measure_from { " (warmup)" } else { "" };
        bar.set_position(millis(elapsed));
        bar.set_message(format!(
            "{label}  {:.1}s / {:.1}s{phase}  {rate:.0} ops/s",
            elapsed.as_secs_f64(),
            total.as_secs_f64()
        ));
        if now >= phases.end {
            return;
        }
    }
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// What measuring one target gave: its row (each workload family has its own) and the text of
/// the first error, if there was one (the count alone does not say what broke).
#[derive(Debug)]
pub(crate) struct Report<R> {
    pub(crate) row: R,
    pub(crate) first_error: Option<String>,
}

/// An error and its causes on one line, each cause once (an I/O error's text is often already in
/// the message that wraps it), cut short.
pub(crate) fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain().map(ToString::to_string) {
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    shorten(&text)
}

/// At most 200 characters: replies and error replies may quote a whole payload.
pub(super) fn shorten(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A plain-text table: the first `names` columns left-aligned, the figures after them
/// right-aligned, every column as wide as its widest cell.
pub(crate) fn render_table(header: &[&str], rows: Vec<Vec<String>>, names: usize) -> String {
    let lines: Vec<Vec<String>> =
        std::iter::once(header.iter().map(|cell| (*cell).to_owned()).collect()).chain(rows).collect();
    let mut widths = vec![0; header.len()];
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            .map(
                |(column, (cell, &width))| {
                    if column < names { format!("{cell:<width$}") } else { format!("{cell:>width$}") }
                },
            )
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_names_each_cause_once_and_cuts_long_text() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let error = anyhow::Error::new(turnstile_client::Error::Io { addr: "h:1".into(), source: io })
            .context("Q.POP");
        assert_eq!(describe(&error), "Q.POP: connection to h:1 failed: reset by peer");
        let long = "é".repeat(300);
        assert_eq!(shorten(&long).chars().count(), 201);
        assert_eq!(shorten("short"), "short");
    }
}
