//! `tributary-scheduler`: schedules sync jobs and serves the control API.
//! It is built in the scheduler issue; until then it only says so.

fn main() -> std::process::ExitCode {
    eprintln!("tributary-scheduler: scheduling is not built yet; see ARCHITECTURE.md");
    std::process::ExitCode::from(2)
}
