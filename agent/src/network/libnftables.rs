//! libnftables, the library the `nft` command is built on (Debian's
//! `libnftables1`, which `nftables` depends on), loaded at run time
//! (`dlopen`) and unloaded (`dlclose`) when no longer needed: the binary
//! does not need it to start, a master never loads it, and an idle agent
//! does not carry its pages (it and the five libraries it brings are
//! about 4 MiB of the agent's RSS while loaded).
//!
//! Why not run `nft`: closing a netfilter netlink socket waits for the
//! kernel to free what the last transactions removed (an RCU grace period,
//! 8–15 ms here), and `nft` closes its socket before it exits, so every
//! change that flushes a chain cost that wait on top of a process start.
//! A [`Context`] keeps its socket open for as long as it lives
//! (`nftables::Nftables` keeps one per agent), so a change costs what
//! `nft` spends parsing and the kernel committing.
//!
//! The unsafe code of the agent is here, and only here: a few functions of
//! the library's stable API (`libnftables.h`), called with pointers this
//! module owns.
//!
//! What the library does that `nft` did in a process of its own, and so
//! now happens in the agent's: it ends the process (`exit`) when it cannot
//! open its netlink socket, when memory runs out, and on a netlink protocol
//! error. The first is checked for before each context is made
//! ([`Library::context`] opens and closes a netfilter socket first, so a
//! process out of descriptors or without nfnetlink gets an error, not an
//! exit); the others are left. It also keeps process-wide state (its
//! initialisation, libgmp's allocation hooks, pointed at its own
//! functions): one `Library` is loaded at a time in a process (a lock held
//! while it is), so two threads never use it at once and nothing of it is
//! called once unloaded.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::ptr::NonNull;

use nix::libc;

/// The library's soname.
const LIBRARY: &CStr = c"libnftables.so.1";

/// `NFT_CTX_DEFAULT`.
const CTX_DEFAULT: u32 = 0;
/// `NFT_CTX_OUTPUT_JSON`: commands are read, and output written, as JSON
/// (what `nft -j` sets).
const OUTPUT_JSON: c_uint = 1 << 4;

type CtxNew = unsafe extern "C" fn(u32) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type CtxSetFlags = unsafe extern "C" fn(*mut c_void, c_uint);
type CtxBuffer = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxGetBuffer = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunCommand = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

/// `NETLINK_NETFILTER`, the socket protocol libnftables opens.
const NETLINK_NETFILTER: i32 = 12;

/// The functions used, found in the loaded library.
struct Functions {
    ctx_new: CtxNew,
    ctx_free: CtxFree,
    output_set_flags: CtxSetFlags,
    buffer_output: CtxBuffer,
    buffer_error: CtxBuffer,
    get_output_buffer: CtxGetBuffer,
    get_error_buffer: CtxGetBuffer,
    run_cmd_from_buffer: RunCommand,
}

/// Why the library cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("cannot load libnftables.so.1: {0}")]
    Open(String),
    #[error("libnftables.so.1 has no {0}")]
    Missing(&'static str),
    #[error("libnftables could not make a context (nft_ctx_new)")]
    Context,
    #[error("libnftables cannot keep its output and errors (nft_ctx_buffer_*)")]
    Buffers,
    #[error("cannot open a netfilter netlink socket, which libnftables needs (it would end the agent): {0}")]
    Socket(String),
}

/// The last `dlerror`, as text.
fn dl_error() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string that stays
    // valid until the next dl call on this thread; it is copied at once.
    let message = unsafe { libc::dlerror() };
    if message.is_null() {
        return "unknown error".into();
    }
    // SAFETY: non-null, NUL-terminated (above).
    unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned()
}

/// The library, loaded: unloaded when dropped (with the libraries it
/// brought, unless something else holds them). Not `Send`: it lives and
/// dies on the thread that loaded it.
pub struct Library {
    handle: NonNull<c_void>,
    functions: Functions,
    /// Held while loaded: one `Library` at a time in the process.
    _only: std::sync::MutexGuard<'static, ()>,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library").finish_non_exhaustive()
    }
}

impl Library {
    /// Loads the library and finds the functions used.
    pub fn open() -> Result<Library, LoadError> {
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let only = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // SAFETY: a NUL-terminated name; the handle is closed only when
        // the `Library` (and every `Context` borrowing it) is dropped.
        let handle = NonNull::new(unsafe {
            libc::dlopen(LIBRARY.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL)
        })
        .ok_or_else(|| LoadError::Open(dl_error()))?;
        match Library::find(handle) {
            Ok(functions) => Ok(Library {
                handle,
                functions,
                _only: only,
            }),
            Err(e) => {
                // SAFETY: a live handle, closed once, with nothing from it
                // in use.
                unsafe { libc::dlclose(handle.as_ptr()) };
                Err(e)
            }
        }
    }

    fn find(handle: NonNull<c_void>) -> Result<Functions, LoadError> {
        let symbol = |name: &'static CStr| -> Result<*mut c_void, LoadError> {
            // SAFETY: a live handle and a NUL-terminated name.
            let found = unsafe { libc::dlsym(handle.as_ptr(), name.as_ptr()) };
            if found.is_null() {
                Err(LoadError::Missing(
                    name.to_str().unwrap_or("a function it should have"),
                ))
            } else {
                Ok(found)
            }
        };
        // SAFETY (each transmute): the symbol is the function of that name
        // in libnftables.h, whose signature the type spells; it is called
        // only while the library is loaded (a `Context` borrows the
        // `Library`).
        unsafe {
            Ok(Functions {
                ctx_new: std::mem::transmute::<*mut c_void, CtxNew>(symbol(c"nft_ctx_new")?),
                ctx_free: std::mem::transmute::<*mut c_void, CtxFree>(symbol(c"nft_ctx_free")?),
                output_set_flags: std::mem::transmute::<*mut c_void, CtxSetFlags>(symbol(
                    c"nft_ctx_output_set_flags",
                )?),
                buffer_output: std::mem::transmute::<*mut c_void, CtxBuffer>(symbol(
                    c"nft_ctx_buffer_output",
                )?),
                buffer_error: std::mem::transmute::<*mut c_void, CtxBuffer>(symbol(
                    c"nft_ctx_buffer_error",
                )?),
                get_output_buffer: std::mem::transmute::<*mut c_void, CtxGetBuffer>(symbol(
                    c"nft_ctx_get_output_buffer",
                )?),
                get_error_buffer: std::mem::transmute::<*mut c_void, CtxGetBuffer>(symbol(
                    c"nft_ctx_get_error_buffer",
                )?),
                run_cmd_from_buffer: std::mem::transmute::<*mut c_void, RunCommand>(symbol(
                    c"nft_run_cmd_from_buffer",
                )?),
            })
        }
    }

    /// A context that reads JSON commands, with its output and errors
    /// kept rather than printed. Its netlink socket is opened in the
    /// network namespace of the calling thread.
    pub fn context(&self) -> Result<Context<'_>, LoadError> {
        // nft_ctx_new ends the process when it cannot open its socket:
        // open one first (and close it) to find out.
        socket2::Socket::new(
            socket2::Domain::from(libc::AF_NETLINK),
            socket2::Type::RAW,
            Some(socket2::Protocol::from(NETLINK_NETFILTER)),
        )
        .map_err(|e| LoadError::Socket(e.to_string()))?;
        let functions = &self.functions;
        // SAFETY: nft_ctx_new takes flags and returns an owned context or
        // null.
        let ctx =
            NonNull::new(unsafe { (functions.ctx_new)(CTX_DEFAULT) }).ok_or(LoadError::Context)?;
        let context = Context { functions, ctx };
        // SAFETY: a live context, owned here.
        let buffered = unsafe {
            (functions.output_set_flags)(ctx.as_ptr(), OUTPUT_JSON);
            (functions.buffer_output)(ctx.as_ptr()) == 0
                && (functions.buffer_error)(ctx.as_ptr()) == 0
        };
        if !buffered {
            return Err(LoadError::Buffers);
        }
        Ok(context)
    }
}

impl Drop for Library {
    fn drop(&mut self) {
        // SAFETY: every `Context` borrowing the library is gone; the
        // handle is closed once.
        unsafe { libc::dlclose(self.handle.as_ptr()) };
    }
}

/// One libnftables context: its netlink socket, opened in the network
/// namespace of the thread that made it, stays open until it is dropped.
/// Not `Send`: it lives and dies on the thread that made it.
pub struct Context<'lib> {
    functions: &'lib Functions,
    ctx: NonNull<c_void>,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context<'_> {
    /// Runs `commands` (a JSON batch: one transaction), or says why the
    /// library or the kernel refused it, in `nft`'s words.
    pub fn run(&mut self, commands: &str) -> Result<(), String> {
        let commands = CString::new(commands).map_err(|_| "the commands hold a NUL byte")?;
        let ptr = self.ctx.as_ptr();
        // SAFETY: a live context used from one thread (`&mut self`), and a
        // NUL-terminated buffer that outlives the call.
        let status = unsafe { (self.functions.run_cmd_from_buffer)(ptr, commands.as_ptr()) };
        // Reading a buffer empties it: the output (none is wanted) every
        // time, so it does not grow while the context lives, and the
        // errors too, so that warnings of a batch that went through do not
        // come before the next one's errors.
        // SAFETY: the context's buffers: null or NUL-terminated, valid
        // until the next call on the context; the error text is copied at
        // once.
        let error = unsafe {
            (self.functions.get_output_buffer)(ptr);
            (self.functions.get_error_buffer)(ptr)
        };
        if status == 0 {
            return Ok(());
        }
        let message = if error.is_null() {
            String::new()
        } else {
            // SAFETY: as above.
            unsafe { CStr::from_ptr(error) }
                .to_string_lossy()
                .trim()
                .to_owned()
        };
        Err(if message.is_empty() {
            format!("libnftables refused the commands (status {status})")
        } else {
            message
        })
    }
}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        // SAFETY: the context is owned here and freed once.
        unsafe { (self.functions.ctx_free)(self.ctx.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_batch_is_refused_in_nfts_words() {
        // No root needed: the batch fails to parse before anything is
        // sent to the kernel.
        let Ok(library) = Library::open() else {
            // The library is part of nftables, which the agent needs; CI
            // has it.
            assert!(
                std::env::var_os("CI").is_none(),
                "libnftables.so.1 is missing (apt-get install libnftables1)"
            );
            return;
        };
        let mut context = library.context().unwrap();
        let error = context
            .run(r#"{"nftables":[{"add":{"bogus":1}}]}"#)
            .unwrap_err();
        assert!(error.contains("Unknown object"), "{error}");
        let error = context.run("{\"nftables\":[\0]}").unwrap_err();
        assert!(error.contains("NUL"), "{error}");
    }
}
