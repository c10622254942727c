//! `squib-jailer`: a drop-in replacement for Firecracker's jailer.
//!
//! It takes the jailer's command line, builds the jail at
//! `<chroot-base-dir>/<exec-file name>/<id>/root` and execs the VMM inside it as
//! `--uid`:`--gid`. The steps, in Firecracker's order, are the functions of [`jail`]:
//!
//! 1. close inherited descriptors, clear the environment, check every argument ([`env`]);
//! 2. create the chroot directory and copy the exec file in ([`chroot`]);
//! 3. join `--netns`, set `--resource-limit`s ([`exec`], [`resource_limits`]);
//! 4. write the `--cgroup` values, then join the cgroups ([`cgroup`]);
//! 5. new mount namespace, `pivot_root` into the jail, create `/dev`, `/dev/net`, `/run`
//!    ([`chroot`]) and the device nodes ([`devices`]);
//! 6. `--daemonize`, `--new-pid-ns` and the pid file, drop privileges, exec ([`exec`]).
//!
//! Any error is printed on stderr and the exit code is 1, as Firecracker's jailer. Until the
//! pivot, a failure also removes what this run created on the host ([`undo`]).

mod args;
mod cgroup;
mod chroot;
mod devices;
mod env;
mod error;
mod exec;
mod resource_limits;
mod undo;

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::args::Command;
use crate::env::{HostFiles, JailEnv};
use crate::error::JailerError;
use crate::exec::StartTimes;
use crate::undo::Undo;

fn main() {
    let start_us = exec::clock_us(libc::CLOCK_MONOTONIC);
    let start_cpu_us = exec::cpu_us();
    let result = env::sanitize_process().and_then(|()| run(start_us, start_cpu_us));
    if let Err(err) = result {
        eprintln!("{err}");
        std::process::exit(1);
    }
}

/// Parses the command line and, unless it asks for help or the version, builds the jail.
fn run(start_us: u64, start_cpu_us: u64) -> Result<(), JailerError> {
    match args::parse(std::env::args().skip(1))? {
        Command::Help => print!("{}", args::help_text()),
        Command::Version => print!("{}", args::version_text()),
        Command::Jail(arguments) => {
            let env = JailEnv::new(&arguments, &HostFiles::default())?;
            return Err(jail(&env, start_us, start_cpu_us));
        }
    }
    Ok(())
}

/// Builds the jail and execs the VMM; returns only the error that stopped it.
fn jail(env: &JailEnv, start_us: u64, start_cpu_us: u64) -> JailerError {
    let mut undo = Undo::default();
    let dev_null = match prepare_host(env, &mut undo).and_then(|dev_null| {
        chroot::pivot_into(&env.chroot_dir)?;
        Ok(dev_null)
    }) {
        Ok(dev_null) => dev_null,
        Err(err) => {
            for cgroup in &env.cgroups {
                cgroup.leave(std::process::id());
            }
            undo.roll_back();
            return err;
        }
    };
    match inside_jail(env, dev_null.as_ref(), start_us, start_cpu_us) {
        Ok(never) => match never {},
        Err(err) => err,
    }
}

/// Steps 2–4, on the host: returns `/dev/null` when `--daemonize` needs it.
fn prepare_host(env: &JailEnv, undo: &mut Undo) -> Result<Option<File>, JailerError> {
    undo.create_dir_all(&env.chroot_dir)
        .map_err(|err| JailerError::CreateDir(env.chroot_dir.clone(), err))?;
    chroot::copy_exec_file(&env.exec_file, &env.chroot_dir, env.uid, env.gid, undo)?;
    if let Some(netns) = &env.netns {
        exec::join_netns(netns)?;
    }
    env.limits.install()?;
    join_cgroups(env, undo)?;
    env.daemonize.then(exec::open_dev_null).transpose()
}

/// Writes every cgroup value first, then moves this process into each cgroup.
fn join_cgroups(env: &JailEnv, undo: &mut Undo) -> Result<(), JailerError> {
    let pid = std::process::id();
    if let Some(parent) = &env.join_cgroup {
        let procs = parent.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).map_err(|err| JailerError::Write(procs, err))?;
    }
    for cgroup in &env.cgroups {
        cgroup.write_value(undo)?;
    }
    for cgroup in &env.cgroups {
        cgroup.attach(pid)?;
    }
    Ok(())
}

/// Steps 5–6, inside the jail; only returns on failure.
fn inside_jail(
    env: &JailEnv,
    dev_null: Option<&File>,
    start_us: u64,
    start_cpu_us: u64,
) -> Result<std::convert::Infallible, JailerError> {
    let root = Path::new("/");
    chroot::create_jail_folders(root, env.uid, env.gid)?;
    devices::create_all(root, env.uid, env.gid, env.uffd_minor)?;

    // CPU time of the jailer processes that forked and exited, and where this one's starts.
    let mut spent_cpu_us = 0;
    let mut own_start_cpu_us = start_cpu_us;
    if let Some(dev_null) = dev_null {
        spent_cpu_us = exec::daemonize(dev_null, own_start_cpu_us)?;
        own_start_cpu_us = 0;
    }
    let exec_path = PathBuf::from("/").join(&env.exec_name);
    let pid_file = exec::pid_file_path(&exec_path);
    if env.new_pid_ns {
        spent_cpu_us += exec::cpu_us().saturating_sub(own_start_cpu_us);
        exec::enter_new_pid_ns(&pid_file)?;
        own_start_cpu_us = 0;
    } else {
        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        exec::write_pid_file(&pid_file, pid)?;
    }
    exec::drop_privileges(env.uid, env.gid)?;
    let cpu_now = exec::cpu_us();
    let times = StartTimes {
        start_us,
        start_cpu_us: cpu_now,
        parent_cpu_us: spent_cpu_us + cpu_now.saturating_sub(own_start_cpu_us),
    };
    Err(exec::exec(
        &exec_path,
        &exec::vmm_args(&env.id, times, &env.extra_args),
    ))
}
