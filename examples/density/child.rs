//! A backend run in a child process: the example runs itself again with
//! `--child`. Wasmtime's pooling allocator needs a kernel mapping or more
//! per live instance; at `vm.max_map_count` even `malloc` fails (a large
//! allocation is a mapping too), and the process may abort or hang. In a
//! child that takes only the child down, and the parent reports the
//! largest live count it reached and how it ended.
//!
//! The child writes lines on its stdout: `progress <live> <peak live>
//! <instantiations>` every 100 ms, then `result <json>` (its latencies and
//! probes) or `error <message>` (the backend could not be made). Any other
//! line is shown as is; its stderr is kept for the report.

use crate::report::{BackendRun, Ended, Measured, Probe};
use crate::run::{Outcome, Progress};
use crate::worker::{Latencies, WorkerStats, latencies};
use crate::{Args, Backend};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The child's side: runs the backend, then reports it on stdout.
pub fn serve(args: &Args) -> Result<(), String> {
    let line = match crate::run_here(args, args.backend, Progress::Lines) {
        // The windows are released by now: a large allocation works again.
        Ok(run) => format!("result {}", encode(&run)),
        Err(e) => format!("error {}", e.replace('\n', " ")),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing to the parent: {e}"))
}

/// The parent's side: runs `backend` in a child and waits for it, at most
/// the run's length and a minute (a child that hangs is killed).
pub fn run(args: &Args, backend: Backend) -> Result<BackendRun, String> {
    let name = match backend {
        Backend::WasmtimePooling => "Wasmtime pooling allocator",
        _ => "instance-pool",
    };
    let exe = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
    let backend_flag = backend
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    // Later flags override earlier ones (`args_override_self`).
    let mut child = Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .args(["--backend", &backend_flag, "--child"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", exe.display()))?;
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = child.stderr.take().expect("piped");
    let last_words = std::thread::spawn(move || {
        let mut tail = std::collections::VecDeque::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tail.len() == 8 {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        tail.into_iter().collect::<Vec<_>>().join(" | ")
    });

    let bar = ProgressBar::new(args.seconds.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>3} [{bar:36}] {percent:>3}% {msg}")
            .expect("progress template")
            .progress_chars("=> "),
    );
    let start = Instant::now();
    let deadline = start + args.seconds + Duration::from_secs(60).max(args.seconds);
    let (mut largest, mut last) = (0usize, (Instant::now(), 0u64));
    let mut outcome: Option<Result<BackendRun, String>> = None;
    let mut killed = false;
    loop {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix("progress ") {
                    let n: Vec<u64> = rest.split(' ').filter_map(|v| v.parse().ok()).collect();
                    if let [live, peak, made] = n[..] {
                        largest = largest.max(peak as usize);
                        let now = Instant::now();
                        let rate = (made - last.1.min(made)) as f64 / (now - last.0).as_secs_f64();
                        last = (now, made);
                        bar.set_position(start.elapsed().as_millis() as u64);
                        bar.set_message(format!("child: {live} live, {rate:.0} inst/s"));
                    }
                } else if let Some(json) = line.strip_prefix("result ") {
                    outcome = Some(decode(json).map(|o| BackendRun::new(name.into(), o)));
                } else if let Some(e) = line.strip_prefix("error ") {
                    outcome = Some(Err(e.to_string()));
                } else {
                    bar.suspend(|| println!("{line}"));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() >= deadline && !killed {
                    // Only the child we started, by its id.
                    let _ = child.kill();
                    killed = true;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    bar.finish_and_clear();
    let status = child
        .wait()
        .map_err(|e| format!("waiting for the child: {e}"))?;
    let words = last_words.join().unwrap_or_default();
    let died = |how: String| {
        let words = if words.is_empty() {
            "nothing on stderr".to_string()
        } else {
            words.clone()
        };
        Ended::Died(format!("{how}; its last words: {words}"))
    };
    let how = (!status.success()).then(|| {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            _ if killed => format!(
                "killed after {:.0} s without an end (hung)",
                start.elapsed().as_secs_f64()
            ),
            (Some(code), _) => format!("exit code {code}"),
            (_, Some(sig)) => format!("signal {sig} ({})", signal_name(sig)),
            _ => format!("{status}"),
        }
    });
    let mut run = match (outcome, how) {
        (Some(Ok(run)), None) => run,
        (Some(Ok(mut run)), Some(how)) => {
            run.ended = died(how);
            run
        }
        (Some(Err(e)), _) => empty(name, Ended::Refused(e)),
        (None, Some(how)) => empty(name, died(how)),
        (None, None) => empty(name, died("exited without a report".into())),
    };
    run.largest_live = run.largest_live.max(largest);
    Ok(run)
}

fn empty(name: &str, ended: Ended) -> BackendRun {
    BackendRun {
        name: name.into(),
        stats: None,
        measured: None,
        largest_live: 0,
        ended,
        metrics_full: None,
        metrics_after: None,
        notes: Vec::new(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGTERM => "SIGTERM",
        _ => "see signal(7)",
    }
}

fn hist(h: &Latencies) -> Value {
    h.iter_recorded()
        .map(|v| json!([v.value_iterated_to(), v.count_at_value()]))
        .collect()
}

fn unhist(v: &Value) -> Result<Latencies, String> {
    let mut h = latencies();
    for pair in v.as_array().ok_or("latencies: not a list")? {
        let (Some(value), Some(count)) = (pair[0].as_u64(), pair[1].as_u64()) else {
            return Err("latencies: not [value, count]".into());
        };
        h.saturating_record_n(value, count);
    }
    Ok(h)
}

fn probe(p: &Probe) -> Value {
    json!([p.rss, p.rss_peak, p.page_tables, p.mappings])
}

fn unprobe(v: &Value) -> Result<Probe, String> {
    let n = |i: usize| v[i].as_u64().ok_or("probe: not a number");
    Ok(Probe {
        rss: n(0)?,
        rss_peak: n(1)?,
        page_tables: n(2)?,
        mappings: n(3)? as usize,
    })
}

fn encode(run: &BackendRun) -> Value {
    let (Some(s), Some(m)) = (&run.stats, &run.measured) else {
        return json!({ "error": run.ended.to_string() });
    };
    json!({
        "by_live": s.by_live.iter().map(hist).collect::<Vec<_>>(),
        "all": hist(&s.all),
        "steady": hist(&s.steady),
        "release": hist(&s.release),
        "threads": m.threads,
        "elapsed": m.elapsed.as_secs_f64(),
        "live_at_full": m.live_at_full,
        "peak_live": m.peak_live,
        "probes": [probe(&m.before), probe(&m.idle), probe(&m.full), probe(&m.after)],
        "error": match &run.ended { Ended::Refused(e) => Some(e.as_str()), _ => None },
        "notes": run.notes,
    })
}

fn decode(text: &str) -> Result<Outcome, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("the child's result: {e}"))?;
    if v.get("by_live").is_none() {
        return Err(v["error"].as_str().unwrap_or("no result").to_string());
    }
    let by_live = v["by_live"].as_array().ok_or("by_live: not a list")?;
    let stats = WorkerStats {
        by_live: by_live.iter().map(unhist).collect::<Result<_, _>>()?,
        all: unhist(&v["all"])?,
        steady: unhist(&v["steady"])?,
        release: unhist(&v["release"])?,
    };
    let n = |k: &str| v[k].as_u64().ok_or(format!("{k}: not a number"));
    let p = |i: usize| unprobe(&v["probes"][i]);
    let measured = Measured {
        threads: n("threads")? as usize,
        elapsed: Duration::from_secs_f64(v["elapsed"].as_f64().unwrap_or(0.0)),
        live_at_full: n("live_at_full")? as usize,
        peak_live: n("peak_live")? as usize,
        before: p(0)?,
        idle: p(1)?,
        full: p(2)?,
        after: p(3)?,
    };
    let notes = serde_json::from_value(v["notes"].clone()).unwrap_or_default();
    Ok(Outcome {
        stats,
        measured,
        error: v["error"].as_str().map(String::from),
        metrics_full: None,
        metrics_after: None,
        notes,
    })
}
