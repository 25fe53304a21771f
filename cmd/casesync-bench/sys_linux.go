package main

import "syscall"

// childAttr makes a child process (casesyncd, a worker) die with the
// bench, so an interrupted run leaves no server holding a port or a file.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
