//! Everything printed: JSON for scripts, aligned tables for people, colour only on a terminal,
//! progress on stderr only on a terminal.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

/// A progress bar is drawn on stderr and its line not yet ended.
static BAR_OPEN: AtomicBool = AtomicBool::new(false);

/// How to print.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Printer {
    /// `--json`.
    pub(crate) json: bool,
    color: bool,
    progress: bool,
}

impl Printer {
    /// Colour and progress follow whether stdout / stderr are terminals (and `NO_COLOR`).
    pub(crate) fn new(json: bool) -> Self {
        let color = !json && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Printer { json, color, progress: std::io::stderr().is_terminal() }
    }

    /// One JSON value on one line.
    pub(crate) fn json(&self, value: &Value) {
        println!("{value}");
    }

    /// A line for people.
    pub(crate) fn line(&self, text: &str) {
        println!("{text}");
    }

    /// `value` as JSON with `--json`, else `human` as text.
    pub(crate) fn either(&self, value: &Value, human: &str) {
        if self.json { self.json(value) } else { self.line(human) }
    }

    /// Pretty JSON for people, one line for machines.
    pub(crate) fn document(&self, value: &Value) {
        if self.json {
            self.json(value);
        } else {
            println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
        }
    }

    /// An aligned table; `paint(row, column, cell)` picks a colour per cell (applied only on a
    /// terminal).
    pub(crate) fn table(
        &self,
        headers: &[&str],
        rows: &[Vec<String>],
        paint: impl Fn(usize, usize, &str) -> Option<Colour>,
    ) {
        let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
        for row in rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let render = |cells: Vec<String>| {
            let last = cells.len().saturating_sub(1);
            cells
                .into_iter()
                .enumerate()
                .map(|(i, cell)| if i == last { cell } else { format!("{cell:<w$}", w = widths[i]) })
                .collect::<Vec<_>>()
                .join("  ")
        };
        let header = render(headers.iter().map(|h| h.to_uppercase()).collect());
        println!("{}", if self.color { format!("\x1b[1m{header}\x1b[0m") } else { header });
        for (r, row) in rows.iter().enumerate() {
            let cells = row
                .iter()
                .enumerate()
                .map(|(i, cell)| {
                    let padded = if i + 1 == row.len() { cell.clone() } else { format!("{cell:<w$}", w = widths[i]) };
                    match (self.color, paint(r, i, cell)) {
                        (true, Some(colour)) => format!("\x1b[{}m{padded}\x1b[0m", colour.code()),
                        _ => padded,
                    }
                })
                .collect::<Vec<_>>();
            println!("{}", cells.join("  "));
        }
    }

    /// Shows `done` of `total` on stderr, on a terminal only.
    pub(crate) fn progress(&self, what: &str, done: u64, total: u64) {
        if !self.progress || self.json {
            return;
        }
        let width = 30u64;
        let filled = (done.min(total) * width).checked_div(total).unwrap_or(width);
        let bar: String = (0..width).map(|i| if i < filled { '#' } else { '.' }).collect();
        eprint!("\r{what} [{bar}] {done}/{total}");
        BAR_OPEN.store(true, Ordering::Relaxed);
        if done >= total {
            self.progress_end();
        }
        let _ = std::io::stderr().flush();
    }

    /// Ends the line of a progress bar, if one is drawn (an operation may end short of its
    /// estimated total, or be interrupted).
    pub(crate) fn progress_end(&self) {
        if BAR_OPEN.swap(false, Ordering::Relaxed) {
            eprintln!();
        }
    }
}

/// Terminal colours.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Colour {
    /// ok.
    Green,
    /// warn.
    Yellow,
    /// critical.
    Red,
}

impl Colour {
    fn code(self) -> &'static str {
        match self {
            Colour::Green => "32",
            Colour::Yellow => "33",
            Colour::Red => "31",
        }
    }
}

/// Asks "`question` [y/N]" on a terminal; without one, only `force` allows it.
pub(crate) fn confirm(question: &str, force: bool) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("refusing to {question} without confirmation: stdin is not a terminal; pass --force");
    }
    eprint!("{question}? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    match answer.trim() {
        "y" | "Y" | "yes" => Ok(()),
        _ => anyhow::bail!("aborted"),
    }
}
