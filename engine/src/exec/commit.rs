//! Stages done: taken from the store, or committed to it as layers.

use super::{BuildError, Builder, StageCtx, StageReport, StageStatus};
use crate::id::Id;
use crate::monitor::{self, Event};
use crate::store::layers::{self, View, Workspace};
use crate::store::{Layer, NewObject, gc};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

impl Builder<'_> {
    /// Reports stage `st` as taken from the store.
    pub(super) fn report_cached(&self, st: StageCtx<'_>) {
        let id = st.id;
        let report = StageReport {
            id: id.clone(),
            ty: st.stage.ty.clone(),
            status: StageStatus::Cached,
            stored: self.store().has(id),
            duration: Duration::ZERO,
            metadata: self.store().meta(id),
        };
        self.monitor.emit(Event::StageFinish {
            stage: st.stage_ref(),
            status: monitor::StageStatus::Cached,
            stored: report.stored,
            duration: 0.0,
            result: "success".into(),
        });
        self.report.lock().expect("report lock").stages[st.pi].push(report);
    }

    /// Commits what stage `si` left in the workspace as its object: the
    /// upper layer over `parent`, or the whole merged tree when the stack
    /// would get too deep. False when the object is bigger than the store's
    /// size limit (then the workspace stays, and the user is told).
    pub(super) fn commit_stage(
        &self,
        st: StageCtx<'_>,
        ws: &mut Option<Workspace>,
        parent: Option<&Id>,
        log: &Path,
        meta: &Value,
        duration: Duration,
    ) -> Result<bool, BuildError> {
        let (p, id) = (st.pipeline, st.id);
        let w = ws.as_mut().expect("the stage ran in a workspace");
        // A flat workspace holds the whole tree: it stands on nothing.
        let parent = parent.filter(|_| !w.is_flat());
        if w.is_flat() {
            // incus wrote in-tree owners; the store keeps the namespace's.
            crate::store::copy::map_owners(&w.upper(), &crate::sandbox::userns::tree_to_host)
                .map_err(crate::store::StoreError::from)?;
        }
        let mut stack = match parent {
            Some(parent) => self.store().stack(parent)?,
            None => Vec::new(),
        };
        stack.insert(0, w.upper());
        let flatten = !layers::fits(&stack);
        let size = layers::disk_usage(&if flatten { w.merged() } else { w.upper() });
        if let Some(max) = self.store().max_size()
            && size > max
        {
            self.monitor.emit(Event::Notice {
                pipeline: Some(p.name.clone()),
                message: format!(
                    "{}: not stored: it takes {}, more than the store's limit of {} (--cache-max-size)",
                    st.stage_ref().label(),
                    gc::human(size),
                    gc::human(max)
                ),
            });
            return Ok(false);
        }
        let info = json!({
            "pipeline": p.name,
            "stage": st.si,
            "type": st.stage.ty,
            "created": unix_now(),
            "duration": duration.as_secs_f64(),
        });
        w.finish(&stack[1..])?;
        let upper = w.upper();
        // Flattening reads the mended upper layer over the stack, mounted
        // read-only for the copy.
        let view = match flatten {
            true => Some(View::open(&stack, self.store().work_dir("view")?)?),
            false => None,
        };
        let layer = match &view {
            Some(view) => Layer::Flatten {
                merged: view.path(),
                stack: &stack,
            },
            None => Layer::Move(&upper),
        };
        self.store().commit(NewObject {
            id,
            layer,
            parent,
            log,
            meta,
            info: &info,
        })?;
        *ws = None;
        Ok(true)
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
