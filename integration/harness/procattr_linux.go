package harness

import "syscall"

// sysProcAttr puts the child in its own process group (so Stop can signal everything it
// started) and asks the kernel to SIGKILL it if the test binary dies without cleaning up.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
