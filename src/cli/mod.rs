//! clap front end. Exit codes: 0 success, 1 "checked and found wanting" (verify, --check),
//! 2 error (bad input, refused operation, I/O failure), printed as one line.

mod batch;
mod image_cmds;
mod output;
mod overlay_cmds;
mod registry_cmds;
mod render;
mod sif_cmds;
mod units;
mod view_cmds;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Edit SIF and OCI-SIF container images in place, without mounting them.
#[derive(Parser)]
#[command(name = "sifovl", version, about, long_about = None, after_help = "Typical use:
  sifovl add --size 1024 --sparse job.oci.sif   # give the image a writable overlay
  singularity run --oci --writable job.oci.sif  # the job writes into it
  sifovl reconcile job.oci.sif                  # make the OCI digests true again
  sifovl verify job.oci.sif")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print only errors, warnings and what the command exists to print (listings, file
    /// contents, --json reports): no summaries, notes or progress bars.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Also say on standard error how long the command took and its peak memory.
    #[arg(short, long, global = true)]
    verbose: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Add a writable ext3 overlay (OCI-SIF layer or native overlay partition).
    Add(overlay_cmds::AddArgs),
    /// Bring the OCI digests back in line with a changed overlay, in place.
    Reconcile(overlay_cmds::ReconcileArgs),
    /// Turn the writable overlay into a read-only squashfs layer or partition.
    Seal(overlay_cmds::SealArgs),
    /// Grow or shrink the writable overlay, keeping its content.
    Resize(overlay_cmds::ResizeArgs),
    /// List the files of the overlay or a layer, without mounting.
    Ls(overlay_cmds::LsArgs),
    /// Remove the writable overlay (the undo of `add`).
    RemoveOverlay(view_cmds::RemoveOverlayArgs),
    /// Print a file of the image (merged view, or one layer) on standard output.
    Cat(view_cmds::CatArgs),
    /// Copy a file or directory out of the image (merged view, or one layer).
    Extract(view_cmds::ExtractArgs),
    /// List what the overlay (or a layer) adds, changes and deletes.
    Diff(view_cmds::DiffArgs),
    /// Show the image at a glance.
    Inspect(overlay_cmds::InspectArgs),
    /// Hash every blob and check every reference and invariant.
    Verify(overlay_cmds::VerifyArgs),
    /// Finish or roll back an interrupted sifovl edit.
    Recover(overlay_cmds::RecoverArgs),
    /// Replay the overlay's ext3 journal in place after a killed job.
    RecoverOverlay(overlay_cmds::RecoverOverlayArgs),
    /// Pack a directory into a squashfs image with sifovl's writer.
    Mksquashfs(overlay_cmds::MksquashfsArgs),
    /// Pack a directory into a tar layer (digest and diff_id printed).
    Mktar(overlay_cmds::MktarArgs),
    /// Export a squashfs layer as a tar layer with AUFS whiteouts.
    ExportLayer(overlay_cmds::ExportLayerArgs),
    /// Import an OCI image (layout, oci-archive, docker-archive) into a new OCI-SIF.
    Import(image_cmds::ImportArgs),
    /// Export an OCI-SIF's image as an OCI layout, oci-archive or docker-archive.
    Export(image_cmds::ExportArgs),
    /// Push an image to a registry (docker://, or oras:// for the whole SIF).
    Push(registry_cmds::PushArgs),
    /// Pull an image from a registry into a new OCI-SIF (or an oras:// SIF).
    Pull(registry_cmds::PullArgs),
    /// List the tags of a registry repository.
    Tags(registry_cmds::TagsArgs),
    /// List (and filter) the repositories of a registry.
    Catalog(registry_cmds::CatalogArgs),
    /// Delete a manifest from a registry.
    Delete(registry_cmds::DeleteArgs),
    /// Store registry credentials in a Docker-format auth file.
    Login(registry_cmds::LoginArgs),
    /// Remove registry credentials from the auth file.
    Logout(registry_cmds::LogoutArgs),
    /// List the objects of a SIF (siftool format).
    List(sif_cmds::ListArgs),
    /// Show one object's descriptor (siftool format).
    Info(sif_cmds::InfoArgs),
    /// Show the global header (siftool format).
    Header(sif_cmds::HeaderArgs),
    /// Write one object's bytes to standard output.
    Dump(sif_cmds::DumpArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "Examples:
  sifovl completions bash > /etc/bash_completion.d/sifovl
  sifovl completions zsh > \"${fpath[1]}/_sifovl\"
  sifovl completions fish > ~/.config/fish/completions/sifovl.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on standard output.
    #[command(after_help = "Example:
  sifovl man > /usr/local/share/man/man1/sifovl.1 && man sifovl")]
    Man,
}

/// How a command that did not fail ended.
pub enum Outcome {
    Success,
    /// A check ran and found a problem (exit 1).
    CheckFailed,
    /// Some of several images failed; each error was already said (exit 2).
    Failed,
}

pub fn run() -> ExitCode {
    // Under --json an error is a JSON object on standard output too (scripts read one
    // place); clap's own usage errors stay text.
    let json = std::env::args_os().skip(1).any(|a| a == "--json");
    let cli = Cli::parse();
    // Commands that edit an image or write files stop cleanly on a first signal (rolled
    // back, temporary files removed); the others keep the default: they end at once.
    if matches!(
        cli.command,
        Command::Add(_)
            | Command::Reconcile(_)
            | Command::Seal(_)
            | Command::RemoveOverlay(_)
            | Command::Resize(_)
            | Command::RecoverOverlay(_)
            | Command::Extract(_)
            | Command::Mksquashfs(_)
            | Command::Mktar(_)
            | Command::ExportLayer(_)
            | Command::Import(_)
            | Command::Export(_)
            | Command::Pull(_)
    ) {
        stop_cleanly_on_signals();
    }
    output::set_quiet(cli.quiet);
    install_progress(cli.quiet);
    let started = std::time::Instant::now();
    let result = match cli.command {
        Command::Add(args) => overlay_cmds::add(args),
        Command::Reconcile(args) => overlay_cmds::reconcile(args),
        Command::Seal(args) => overlay_cmds::seal(args),
        Command::Resize(args) => overlay_cmds::resize(args),
        Command::Ls(args) => overlay_cmds::ls(args),
        Command::RemoveOverlay(args) => view_cmds::remove_overlay(args),
        Command::Cat(args) => view_cmds::cat(args),
        Command::Extract(args) => view_cmds::extract(args),
        Command::Diff(args) => view_cmds::diff(args),
        Command::Inspect(args) => overlay_cmds::inspect(args),
        Command::Verify(args) => overlay_cmds::verify(args),
        Command::Recover(args) => overlay_cmds::recover(args),
        Command::RecoverOverlay(args) => overlay_cmds::recover_overlay(args),
        Command::Mksquashfs(args) => overlay_cmds::mksquashfs(args),
        Command::Mktar(args) => overlay_cmds::mktar(args),
        Command::ExportLayer(args) => overlay_cmds::export_layer(args),
        Command::Import(args) => image_cmds::import(args),
        Command::Export(args) => image_cmds::export(args),
        Command::Push(args) => registry_cmds::push(args),
        Command::Pull(args) => registry_cmds::pull(args),
        Command::Tags(args) => registry_cmds::tags(args),
        Command::Catalog(args) => registry_cmds::catalog(args),
        Command::Delete(args) => registry_cmds::delete(args),
        Command::Login(args) => registry_cmds::login(args),
        Command::Logout(args) => registry_cmds::logout(args),
        Command::List(args) => sif_cmds::list(args),
        Command::Info(args) => sif_cmds::info(args),
        Command::Header(args) => sif_cmds::header(args),
        Command::Dump(args) => sif_cmds::dump(args),
        Command::Completions { shell } => completions(shell),
        Command::Man => man_page(),
    };
    if cli.verbose {
        eprintln!(
            "sifovl: took {:.2} s, peak memory {} MiB",
            started.elapsed().as_secs_f64(),
            peak_memory_kib() >> 10
        );
    }
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::CheckFailed) => ExitCode::from(1),
        Ok(Outcome::Failed) => ExitCode::from(2),
        // The reader of our output went away (`| head`): its choice, not our failure.
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) if e.kind() == sifovl::ErrorKind::Interrupted => {
            eprintln!("sifovl: {}", e.to_string().replace('\n', " "));
            // The shell's convention for "ended by SIGINT".
            ExitCode::from(130)
        }
        Err(e) => {
            // One line, whatever the error carries.
            let message = e.to_string().replace('\n', " ");
            eprintln!("sifovl: {message}");
            if json {
                let report = serde_json::json!({
                    "error": message,
                    "kind": e.kind().name(),
                    "file": first_existing_path(),
                });
                let _ = output::print_json(&report);
            }
            ExitCode::from(2)
        }
    }
}

fn completions(shell: clap_complete::Shell) -> sifovl::Result<Outcome> {
    use clap::CommandFactory;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "sifovl", &mut script);
    output::write_out(&String::from_utf8_lossy(&script))?;
    Ok(Outcome::Success)
}

fn man_page() -> sifovl::Result<Outcome> {
    use clap::CommandFactory;
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .map_err(|e| sifovl::error::Error::io("rendering the man page", e))?;
    output::write_out(&String::from_utf8_lossy(&page))?;
    Ok(Outcome::Success)
}

/// The first command-line argument that names an existing file or directory: the image
/// (or source) the failed command was about, for `--json` error reports.
fn first_existing_path() -> Option<String> {
    std::env::args_os()
        .skip(2)
        .filter(|a| !a.to_string_lossy().starts_with('-'))
        .find(|a| std::path::Path::new(a).exists())
        .map(|a| a.to_string_lossy().into_owned())
}

/// SIGINT, SIGTERM and SIGHUP ask the work to stop at its next check (the edit rolls back,
/// temporary files go); a second one ends the process at once (an edit interrupted that way
/// is finished or rolled back by the next sifovl command, as after a crash).
fn stop_cleanly_on_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    for signal in [SIGINT, SIGTERM, SIGHUP] {
        // SAFETY: the handler does only async-signal-safe work: atomic loads and stores,
        // and `_exit`.
        let _ = unsafe {
            signal_hook::low_level::register(signal, || {
                if sifovl::interrupt::stop_requested() {
                    signal_hook::low_level::exit(130);
                }
                sifovl::interrupt::request_stop();
            })
        };
    }
}

/// The process's peak resident memory (`VmHWM`), in KiB; 0 where /proc does not say.
fn peak_memory_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Progress bars on standard error, only when it is a terminal (sifovl prints no colour
/// anywhere, so `NO_COLOR` has nothing to turn off); notices unless `-q`.
struct TerminalProgress {
    bars: bool,
    notices: bool,
}

struct Bar(indicatif::ProgressBar);

impl sifovl::progress::Reporter for TerminalProgress {
    fn start(&self, label: &str, total_bytes: u64) -> Box<dyn sifovl::progress::Task> {
        // Short work finishes before a bar could help.
        if !self.bars || total_bytes < 64 << 20 {
            return Box::new(Bar(indicatif::ProgressBar::hidden()));
        }
        let bar = indicatif::ProgressBar::new(total_bytes);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:>9} [{bar:32}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        Box::new(Bar(bar))
    }

    fn notice(&self, text: &str) {
        if self.notices {
            eprintln!("sifovl: note: {text}");
        }
    }
}

impl sifovl::progress::Task for Bar {
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

fn install_progress(quiet: bool) {
    use std::io::IsTerminal;
    sifovl::progress::set_reporter(Box::new(TerminalProgress {
        bars: !quiet && std::io::stderr().is_terminal(),
        notices: !quiet,
    }));
}
