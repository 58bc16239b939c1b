//! ONNX Runtime: finding the shared library, the one place where session policy is decided, and session pools.
//!
//! `ort` is built with `load-dynamic`, so nothing is downloaded at build time; the library comes from the PyPI
//! `onnxruntime` wheel that `scripts/setup.sh` unpacks into `runtime/`. A missing library makes `ort` panic on first
//! use, so [`Runtime::init`] checks the path itself first and returns an error that says how to fix it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

/// File name of the ONNX Runtime shared library on this platform.
pub const LIBRARY_NAME: &str = if cfg!(target_os = "macos") {
    "libonnxruntime.dylib"
} else if cfg!(target_os = "windows") {
    "onnxruntime.dll"
} else {
    "libonnxruntime.so"
};

/// Where `scripts/setup.sh` places the library, relative to the repository root.
pub const BUNDLED_DIR: &str = "runtime";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("onnx runtime library not found (looked in: {}); run `scripts/setup.sh`, or set ORT_DYLIB_PATH or `runtime.library` in the config", .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    LibraryNotFound { searched: Vec<PathBuf> },
    #[error("onnx runtime library {path}: cannot be loaded")]
    Load {
        path: PathBuf,
        #[source]
        source: ort::LoadDynamicError,
    },
    #[error("onnx runtime: {loaded} is already loaded in this process; cannot switch to {requested}")]
    AlreadyLoaded { loaded: PathBuf, requested: PathBuf },
    #[error("onnx runtime environment: cannot be created")]
    Environment {
        #[source]
        source: ort::Error,
    },
    #[error("runtime.execution is `cuda` but this binary was built without the `cuda` feature")]
    CudaNotBuilt,
    #[error("model {path}: cannot create an inference session")]
    Session {
        path: PathBuf,
        #[source]
        source: ort::Error,
    },
}

/// Which hardware runs the models. CUDA needs a GPU build of ONNX Runtime; CPU is the default and what CI uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionTarget {
    #[default]
    Cpu,
    Cuda,
}

/// Session policy. On a 2-core machine spinning threads steal the core the other request needs, so spinning is off;
/// throughput comes from several single-threaded sessions side by side rather than one wide session.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Path to `libonnxruntime.so`; overrides `ORT_DYLIB_PATH` and the bundled `runtime/` folder.
    pub library: Option<PathBuf>,
    /// Intra-op threads per session (default 1).
    pub intra_threads: usize,
    /// Sessions per model, i.e. how many inferences of one model may run at once (default: number of cores + 1,
    /// matching the server's `max_concurrent_analyses`).
    pub sessions: usize,
    /// Execution target (default `cpu`).
    pub execution: ExecutionTarget,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            library: None,
            intra_threads: 1,
            sessions: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) + 1,
            execution: ExecutionTarget::Cpu,
        }
    }
}

/// Finds the shared library: the explicit config key first, then `ORT_DYLIB_PATH`, then `runtime/` in the working
/// directory or in any folder above the running executable (so `target/release/facematch` finds the repo's copy).
pub fn locate_library(explicit: Option<&Path>) -> Result<PathBuf, RuntimeError> {
    let mut searched = Vec::new();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path) = explicit {
        candidates.push(path.to_path_buf());
    } else if let Some(env) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        candidates.push(PathBuf::from(env));
    } else {
        for base in search_roots() {
            candidates.push(base.join(BUNDLED_DIR).join(LIBRARY_NAME));
        }
    }
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
        searched.push(candidate);
    }
    Err(RuntimeError::LibraryNotFound { searched })
}

/// Folders in which project-relative paths (`runtime/`, `models/`) are looked up: the working directory, then the
/// executable's folder and its ancestors.
pub fn search_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        let mut dir = exe.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if !roots.contains(&d) {
                roots.push(d.clone());
            }
            dir = d.parent().map(Path::to_path_buf);
        }
    }
    roots
}

/// A loaded ONNX Runtime with the project's session policy.
#[derive(Clone)]
pub struct Runtime {
    environment: Arc<ort::environment::Environment>,
    config: RuntimeConfig,
    library: PathBuf,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("library", &self.library).field("config", &self.config).finish()
    }
}

/// ONNX Runtime allows one environment per process (a second `CreateEnv` is refused), so the environment is the
/// one process-wide value here; everything that varies (threads, sessions, execution target) stays per `Runtime`.
static ENVIRONMENT: Mutex<Option<(PathBuf, Arc<ort::environment::Environment>)>> = Mutex::new(None);

impl Runtime {
    pub fn init(config: &RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let library = locate_library(config.library.as_deref())?;
        let mut shared = ENVIRONMENT.lock();
        if let Some((loaded, environment)) = shared.as_ref() {
            if *loaded != library {
                return Err(RuntimeError::AlreadyLoaded { loaded: loaded.clone(), requested: library });
            }
            return Ok(Runtime { environment: environment.clone(), config: config.clone(), library });
        }
        let builder = ort::init_from(&library).map_err(|source| RuntimeError::Load { path: library.clone(), source })?;
        let environment = Arc::new(
            builder
                .with_name("facematch")
                .with_telemetry(false)
                .build()
                .map_err(|source| RuntimeError::Environment { source })?,
        );
        *shared = Some((library.clone(), environment.clone()));
        Ok(Runtime { environment, config: config.clone(), library })
    }

    pub fn library(&self) -> &Path {
        &self.library
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Creates one session with the project's policy. Every model goes through here.
    pub fn session(&self, model: &Path) -> Result<Session, RuntimeError> {
        let fail = |source: ort::Error| RuntimeError::Session { path: model.to_path_buf(), source };
        let mut builder = Session::builder(&self.environment)
            .map_err(fail)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| fail(e.into()))?
            .with_intra_threads(self.config.intra_threads.max(1))
            .map_err(|e| fail(e.into()))?
            .with_inter_threads(1)
            .map_err(|e| fail(e.into()))?
            .with_parallel_execution(false)
            .map_err(|e| fail(e.into()))?
            .with_intra_op_spinning(false)
            .map_err(|e| fail(e.into()))?
            .with_inter_op_spinning(false)
            .map_err(|e| fail(e.into()))?;
        if self.config.execution == ExecutionTarget::Cuda {
            builder = self.with_cuda(builder, model)?;
        }
        builder.commit_from_file(model).map_err(fail)
    }

    #[cfg(feature = "cuda")]
    fn with_cuda(
        &self,
        builder: ort::session::builder::SessionBuilder,
        model: &Path,
    ) -> Result<ort::session::builder::SessionBuilder, RuntimeError> {
        builder
            .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
            .map_err(|e| RuntimeError::Session { path: model.to_path_buf(), source: e.into() })
    }

    #[cfg(not(feature = "cuda"))]
    fn with_cuda(
        &self,
        _builder: ort::session::builder::SessionBuilder,
        _model: &Path,
    ) -> Result<ort::session::builder::SessionBuilder, RuntimeError> {
        Err(RuntimeError::CudaNotBuilt)
    }

    /// A pool of `config.sessions` sessions of one model: `Session::run` needs `&mut self`, so concurrent requests
    /// each take their own session instead of queueing behind one lock.
    pub fn session_pool(&self, model: &Path) -> Result<SessionPool, RuntimeError> {
        let count = self.config.sessions.max(1);
        let sessions = (0..count).map(|_| self.session(model)).collect::<Result<Vec<_>, _>>()?;
        Ok(SessionPool { inner: Arc::new(PoolInner { idle: Mutex::new(sessions), returned: Condvar::new(), size: count }) })
    }
}

struct PoolInner {
    idle: Mutex<Vec<Session>>,
    returned: Condvar,
    size: usize,
}

/// Sessions of one model, checked out one at a time per running inference.
#[derive(Clone)]
pub struct SessionPool {
    inner: Arc<PoolInner>,
}

impl SessionPool {
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// Waits for an idle session, runs `f` on it and puts it back, even when `f` fails.
    pub fn with_session<T>(&self, f: impl FnOnce(&mut Session) -> T) -> T {
        let mut session = {
            let mut idle = self.inner.idle.lock();
            loop {
                if let Some(s) = idle.pop() {
                    break s;
                }
                self.inner.returned.wait(&mut idle);
            }
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut session)));
        self.inner.idle.lock().push(session);
        self.inner.returned.notify_one();
        match result {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Input and output names with their shapes, read from the first idle session (for manifest checks).
    pub fn signature(&self) -> ModelSignature {
        self.with_session(|s| ModelSignature::of(s))
    }
}

/// Tensor names and shapes a model declares (-1 for a dynamic dimension).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSignature {
    pub inputs: Vec<(String, Vec<i64>)>,
    pub outputs: Vec<(String, Vec<i64>)>,
}

impl ModelSignature {
    pub fn of(session: &Session) -> ModelSignature {
        let shape_of = |t: &ort::value::ValueType| t.tensor_shape().map(|s| s.iter().copied().collect()).unwrap_or_default();
        ModelSignature {
            inputs: session.inputs().iter().map(|o| (o.name().to_string(), shape_of(o.dtype()))).collect(),
            outputs: session.outputs().iter().map(|o| (o.name().to_string(), shape_of(o.dtype()))).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_missing_library_is_a_clear_error() {
        let err = locate_library(Some(Path::new("/nonexistent/libonnxruntime.so"))).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/nonexistent/libonnxruntime.so"), "{text}");
        assert!(text.contains("scripts/setup.sh"), "{text}");
    }

    #[test]
    fn search_roots_start_with_the_working_directory() {
        let roots = search_roots();
        assert_eq!(roots.first(), std::env::current_dir().ok().as_ref());
        assert!(roots.len() >= 2);
    }
}
