//! Pseudo-terminals for console sessions: a pair opened through `/dev/ptmx` (rustix), its
//! size, and the master side as non-blocking async reads and writes on tokio's reactor.
//!
//! Reading the master once every holder of the slave side is gone fails with `EIO`: that is
//! the end of the session's output, reported as end of file.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;
use tokio::io::unix::AsyncFd;

/// Both sides of a new pseudo-terminal.
pub(crate) struct PtyPair {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a pseudo-terminal of `cols` x `rows`.
pub(crate) fn open(cols: u16, rows: u16) -> io::Result<PtyPair> {
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let name = rustix::pty::ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    set_size(&master, cols, rows)?;
    Ok(PtyPair { master, slave })
}

/// Sets the terminal's size (the kernel sends SIGWINCH to its foreground process group).
pub(crate) fn set_size(fd: impl AsFd, cols: u16, rows: u16) -> io::Result<()> {
    let size = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(fd, size)?;
    Ok(())
}

/// The master side of a pseudo-terminal, read and written without blocking a thread.
pub struct PtyMaster {
    fd: AsyncFd<OwnedFd>,
}

impl PtyMaster {
    /// Wraps `master` (made non-blocking); needs a tokio runtime.
    pub(crate) fn new(master: OwnedFd) -> io::Result<Self> {
        let flags = rustix::fs::fcntl_getfl(&master)?;
        rustix::fs::fcntl_setfl(&master, flags | OFlags::NONBLOCK)?;
        // `new` is deprecated for fds the caller may close behind tokio's back; this one is
        // an `OwnedFd` moved in, closed only when the `AsyncFd` is dropped (deregistered first).
        #[allow(deprecated)]
        let fd = AsyncFd::new(master)?;
        Ok(PtyMaster { fd })
    }

    /// Reads what the terminal shows; `Ok(0)` once nothing holds the terminal any more.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut *buf)?)) {
                Ok(Ok(n)) => return Ok(n),
                // The slave side is closed everywhere: the session's output ended.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `data` as typed input.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| Ok(rustix::io::write(fd.get_ref(), data)?)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Sets the terminal's size.
    pub fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        set_size(self.fd.get_ref(), cols, rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_written_to_the_slave_are_read_from_the_master_until_eio_is_eof() {
        let pair = open(100, 30).unwrap();
        let size = rustix::termios::tcgetwinsize(&pair.slave).unwrap();
        assert_eq!((size.ws_col, size.ws_row), (100, 30));
        let master = PtyMaster::new(pair.master).unwrap();
        rustix::io::write(&pair.slave, b"hi").unwrap();
        let mut buf = [0u8; 16];
        let n = master.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hi");
        master.resize(7, 8).unwrap();
        let size = rustix::termios::tcgetwinsize(&pair.slave).unwrap();
        assert_eq!((size.ws_col, size.ws_row), (7, 8));
        drop(pair.slave);
        assert_eq!(master.read(&mut buf).await.unwrap(), 0);
    }
}
