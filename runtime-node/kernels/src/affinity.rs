//! Which CPUs the kernel pool's threads may run on, and pinning one thread to one CPU (Linux;
//! elsewhere nothing is pinned and every call reports so).
//!
//! Why pin: a decode step is a few hundred short parallel loops that end in a barrier; a thread
//! the OS moves to another core mid-step arrives late with cold caches and every other thread
//! waits for it. Pinning is only safe when the process owns its CPUs (a Kubernetes pod under the
//! static CPU manager, or local mode using every core); on shared CPUs two pinned processes
//! would fight over the same cores, hence [`Pinning::Auto`].

use std::io;
use std::thread::JoinHandle;

/// When the pool pins its threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pinning {
    /// Pin when the process may run on exactly as many CPUs as the pool has threads.
    #[default]
    Auto,
    /// Pin thread i to the i-th allowed CPU (wrapping around when there are fewer CPUs).
    Always,
    /// Let the OS place the threads.
    Never,
}

/// The CPUs thread `i` of a `threads`-thread pool is pinned to, `None` when it is not pinned.
pub fn plan(threads: usize, pinning: Pinning, allowed: &[usize]) -> Option<Vec<usize>> {
    let pin = match pinning {
        Pinning::Never => false,
        Pinning::Always => !allowed.is_empty(),
        Pinning::Auto => threads > 0 && allowed.len() == threads,
    };
    pin.then(|| (0..threads.max(1)).map(|i| allowed[i % allowed.len()]).collect())
}

/// The CPUs the calling thread may run on (its affinity mask), in ascending order; empty where
/// the OS does not say.
pub fn current_thread_cpus() -> Vec<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; the call writes at most its size.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::pthread_getaffinity_np(libc::pthread_self(), size_of::<libc::cpu_set_t>(), &mut set) != 0
            {
                return Vec::new();
            }
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
                .collect()
        }
    }
    #[cfg(not(target_os = "linux"))]
    Vec::new()
}

/// Restricts the calling thread to `cpus`.
pub fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `pthread_self` is the live calling thread.
        unsafe { pin(libc::pthread_self(), cpus) }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cpus;
        Err(unsupported())
    }
}

/// Restricts a thread this process spawned, still running, to `cpus`.
pub fn pin_spawned<T>(thread: &JoinHandle<T>, cpus: &[usize]) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::thread::JoinHandleExt;
        // SAFETY: a handle not yet joined names a thread of this process; pinning one that has
        // already exited fails with ESRCH instead of touching another thread.
        unsafe { pin(thread.as_pthread_t(), cpus) }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (thread, cpus);
        Err(unsupported())
    }
}

#[cfg(not(target_os = "linux"))]
fn unsupported() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "thread pinning needs Linux")
}

/// Restricts a thread of this process (by its pthread handle) to `cpus`.
///
/// # Safety
/// `thread` must be a live thread of this process.
#[cfg(target_os = "linux")]
unsafe fn pin(thread: libc::pthread_t, cpus: &[usize]) -> io::Result<()> {
    if let Some(&cpu) = cpus.iter().find(|&&cpu| cpu >= libc::CPU_SETSIZE as usize) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU {cpu} is past the affinity mask's {} CPUs", libc::CPU_SETSIZE),
        ));
    }
    // SAFETY: a zeroed cpu_set_t is a valid empty set, every index was checked above, and the
    // caller vouches for `thread`.
    let status = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        cpus.iter().for_each(|&cpu| libc::CPU_SET(cpu, &mut set));
        libc::pthread_setaffinity_np(thread, size_of::<libc::cpu_set_t>(), &set)
    };
    match status {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_pins_only_cpus_the_process_owns_exactly() {
        assert_eq!(plan(2, Pinning::Auto, &[4, 9]), Some(vec![4, 9]));
        // More CPUs than threads: others may share them, so the OS places the threads.
        assert_eq!(plan(2, Pinning::Auto, &[0, 1, 2, 3]), None);
        assert_eq!(plan(4, Pinning::Auto, &[0, 1]), None);
        assert_eq!(plan(2, Pinning::Auto, &[]), None);
        assert_eq!(plan(3, Pinning::Always, &[0, 1]), Some(vec![0, 1, 0]));
        assert_eq!(plan(1, Pinning::Always, &[5, 6]), Some(vec![5]));
        assert_eq!(plan(2, Pinning::Never, &[0, 1]), None);
        assert_eq!(plan(2, Pinning::Always, &[]), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_pinned_thread_reports_its_one_cpu_and_bad_cpus_are_refused() {
        let allowed = current_thread_cpus();
        assert!(!allowed.is_empty(), "Linux reports the affinity mask");
        let last = *allowed.last().unwrap();
        std::thread::spawn(move || {
            pin_current_thread(&[last]).unwrap();
            assert_eq!(current_thread_cpus(), vec![last]);
        })
        .join()
        .unwrap();
        let error = pin_current_thread(&[libc::CPU_SETSIZE as usize]).unwrap_err();
        assert!(error.to_string().contains("past the affinity mask"), "{error}");
        assert_eq!(current_thread_cpus(), allowed, "a refused pin changes nothing");
    }
}
