package main

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// baselineProc is a baseline server (etcd, nats-server) that fedbench runs as a
// child process: started in its own process group, killed with fedbench, its
// output in a log file, stopped with SIGTERM then SIGKILL.
type baselineProc struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
}

// start runs cmd with its output appended to logPath.
func (p *baselineProc) start(cmd *exec.Cmd, logPath string) error {
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	p.cmd, p.done, p.logPath = cmd, make(chan struct{}), logPath
	go func() { cmd.Wait(); logf.Close(); close(p.done) }()
	return nil
}

// exited returns an error naming the log when the process has ended.
func (p *baselineProc) exited() error {
	select {
	case <-p.done:
		return errors.New(p.name + " exited; see " + p.logPath)
	default:
		return nil
	}
}

func (p *baselineProc) Stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *baselineProc) PIDs() map[int]string {
	if p.cmd == nil || p.cmd.Process == nil {
		return nil
	}
	return map[int]string{p.cmd.Process.Pid: p.name}
}

// procGroup is a baseline run as several processes (a cluster): stopped
// together, its CPU counted over all of them.
type procGroup []*baselineProc

func (g *procGroup) add(name string, cmd *exec.Cmd, logPath string) error {
	p := &baselineProc{name: name}
	if err := p.start(cmd, logPath); err != nil {
		return err
	}
	*g = append(*g, p)
	return nil
}

func (g procGroup) exited() error {
	for _, p := range g {
		if err := p.exited(); err != nil {
			return err
		}
	}
	return nil
}

func (g procGroup) Stop() {
	for _, p := range g {
		p.Stop()
	}
}

func (g procGroup) PIDs() map[int]string {
	out := map[int]string{}
	for _, p := range g {
		for pid, n := range p.PIDs() {
			out[pid] = n
		}
	}
	return out
}
