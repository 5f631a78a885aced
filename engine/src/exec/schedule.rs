//! Runs pipelines in parallel, each once every pipeline it needs is done.
//!
//! ```text
//!            ┌──────────── scheduler (the calling thread) ───────────┐
//!            │ ready = waiting pipelines whose needs are all done    │
//!            │ start the lowest ready ones while running < jobs      │
//!            │ wait for one to report on the channel; repeat         │
//!            └──────┬───────────────────────────────▲────────────────┘
//!        spawn (scoped thread)                  (index, result)
//!            ┌──────▼──────┐ ┌─────────────┐        │
//!            │ work(pi)    │ │ work(pj)    │ ───────┘
//!            └─────────────┘ └─────────────┘
//! ```
//!
//! A failure stops the scheduling of new pipelines; those already running
//! finish (their stages are not cut short, so every failure among them is
//! reported). With `keep_going`, pipelines that do not need the failed one
//! go on, and only those that need it (directly or not) are skipped.
//! Among ready pipelines the lowest index goes first, so `--jobs 1` builds in
//! the same order as [`crate::manifest::graph::order`].

use std::collections::BTreeSet;
use std::sync::mpsc;

/// How a pipeline came out of [`run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// It never started.
    Waiting,
    /// Started (only seen while running).
    Running,
    /// It finished successfully.
    Done,
    /// It failed.
    Failed,
}

/// Runs `work(i)` for every pipeline `i` after all of `needs[i]`, at most
/// `jobs` at a time. Returns each pipeline's final state and the failures in
/// the order they happened.
pub fn run<E: Send>(
    needs: &[BTreeSet<usize>],
    jobs: usize,
    keep_going: bool,
    work: &(dyn Fn(usize) -> Result<(), E> + Sync),
) -> (Vec<State>, Vec<(usize, E)>) {
    let n = needs.len();
    let jobs = jobs.max(1);
    let mut state = vec![State::Waiting; n];
    let mut failures = Vec::new();
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let mut running = 0;
        let mut stop = false;
        loop {
            if !stop {
                for i in 0..n {
                    if running >= jobs {
                        break;
                    }
                    if state[i] == State::Waiting
                        && needs[i].iter().all(|&d| state[d] == State::Done)
                    {
                        state[i] = State::Running;
                        running += 1;
                        let tx = tx.clone();
                        scope.spawn(move || {
                            // A panic is carried to the scheduler and raised
                            // there: otherwise it would wait for a report
                            // that never comes.
                            let result =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(i)));
                            let _ = tx.send((i, result));
                        });
                    }
                }
            }
            if running == 0 {
                break;
            }
            let (i, result) = rx.recv().expect("the scheduler holds a sender");
            running -= 1;
            match result {
                Ok(Ok(())) => state[i] = State::Done,
                Ok(Err(e)) => {
                    state[i] = State::Failed;
                    failures.push((i, e));
                    stop |= !keep_going;
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    (state, failures)
}

/// The default `--jobs`: the number of cores.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    fn needs(list: &[&[usize]]) -> Vec<BTreeSet<usize>> {
        list.iter().map(|d| d.iter().copied().collect()).collect()
    }

    /// What a traced run did: final states, failed pipelines, a log of
    /// ("start"/"end", i), and the most that ran at once.
    type Trace = (Vec<State>, Vec<usize>, Vec<(&'static str, usize)>, usize);

    fn trace(needs: &[BTreeSet<usize>], jobs: usize, keep_going: bool, fails: &[usize]) -> Trace {
        let log = Mutex::new(Vec::new());
        let now = Mutex::new((0usize, 0usize));
        let work = |i: usize| -> Result<(), String> {
            log.lock().unwrap().push(("start", i));
            {
                let mut n = now.lock().unwrap();
                n.0 += 1;
                n.1 = n.1.max(n.0);
            }
            std::thread::sleep(Duration::from_millis(30));
            now.lock().unwrap().0 -= 1;
            log.lock().unwrap().push(("end", i));
            if fails.contains(&i) {
                Err(format!("{i} failed"))
            } else {
                Ok(())
            }
        };
        let (state, failures) = run(needs, jobs, keep_going, &work);
        let failed = failures.iter().map(|(i, _)| *i).collect();
        (
            state,
            failed,
            log.into_inner().unwrap(),
            now.into_inner().unwrap().1,
        )
    }

    fn position(log: &[(&str, usize)], what: &str, i: usize) -> usize {
        log.iter().position(|&(w, j)| w == what && j == i).unwrap()
    }

    #[test]
    fn needs_finish_before_their_dependants_start() {
        // 0 and 1 independent; 2 needs both; 3 needs 2.
        let needs = needs(&[&[], &[], &[0, 1], &[2]]);
        let (state, failed, log, most) = trace(&needs, 4, false, &[]);
        assert!(state.iter().all(|&s| s == State::Done));
        assert!(failed.is_empty());
        assert_eq!(most, 2, "0 and 1 ran together: {log:?}");
        assert!(position(&log, "end", 0) < position(&log, "start", 2));
        assert!(position(&log, "end", 1) < position(&log, "start", 2));
        assert!(position(&log, "end", 2) < position(&log, "start", 3));
    }

    #[test]
    fn never_more_than_jobs_at_once() {
        let needs = needs(&[&[], &[], &[], &[], &[]]);
        let (_, _, log, most) = trace(&needs, 2, false, &[]);
        assert_eq!(most, 2, "{log:?}");
        let (_, _, log, most) = trace(&needs, 1, false, &[]);
        assert_eq!(most, 1);
        let order: Vec<usize> = log.iter().filter(|e| e.0 == "start").map(|e| e.1).collect();
        assert_eq!(order, [0, 1, 2, 3, 4], "one at a time, in manifest order");
    }

    #[test]
    fn a_failure_stops_new_work() {
        let needs = needs(&[&[], &[], &[]]);
        let (state, failed, _, _) = trace(&needs, 1, false, &[0]);
        assert_eq!(state, [State::Failed, State::Waiting, State::Waiting]);
        assert_eq!(failed, [0]);
    }

    #[test]
    fn running_pipelines_finish_and_every_failure_is_kept() {
        let needs = needs(&[&[], &[], &[0]]);
        let (state, failed, _, _) = trace(&needs, 2, false, &[0, 1]);
        assert_eq!(state, [State::Failed, State::Failed, State::Waiting]);
        assert_eq!(failed.len(), 2);
    }

    #[test]
    fn keep_going_skips_only_what_needs_the_failure() {
        // 1 needs 0 (fails); 2 is independent; 3 needs 1.
        let needs = needs(&[&[], &[0], &[], &[1]]);
        let (state, failed, _, _) = trace(&needs, 1, true, &[0]);
        assert_eq!(
            state,
            [State::Failed, State::Waiting, State::Done, State::Waiting]
        );
        assert_eq!(failed, [0]);
    }
}
