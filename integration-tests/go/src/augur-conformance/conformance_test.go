// Package conformance runs containerd 1.6's own snapshotter conformance suite
// (github.com/containerd/containerd/snapshots/testsuite) against an EXTERNAL
// proxy snapshotter process, talking to it over gRPC exactly as containerd's
// proxy_plugins do (snapshots/proxy client, containerd's dial options).
//
// Environment:
//
//	SNAPSHOTTER_BIN   snapshotter binary (required); it is started as
//	                  $SNAPSHOTTER_BIN --root <root>/state --address <root>/snap.sock $SNAPSHOTTER_ARGS
//	SNAPSHOTTER_ARGS  extra arguments, space-separated (optional)
//
// Every test of the suite starts a FRESH snapshotter process in its own
// directory (stdout+stderr go to <root>/daemon.log, whose tail is printed
// when the test fails) and stops it with SIGTERM afterwards; a non-zero exit
// status after SIGTERM fails the test. The suite mounts what the snapshotter
// returns, so it must run as root and with -test.root (like containerd's own
// overlay tests), e.g. via integration-tests/scripts/conformance.sh:
//
//	SNAPSHOTTER_BIN=... ./augur-conformance.test -test.v -test.root
package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/defaults"
	"github.com/containerd/containerd/log"
	"github.com/containerd/containerd/pkg/dialer"
	"github.com/containerd/containerd/pkg/testutil"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	// snapshotterName is sent in every request, like the name of a
	// [proxy_plugins.<name>] entry in containerd's config.
	snapshotterName = "augur"
	readyTimeout    = 20 * time.Second
	stopTimeout     = 10 * time.Second
	logTailBytes    = 8 << 10
	// sun_path is 108 bytes including the terminating NUL.
	maxSocketPath = 107
)

func TestSnapshotterConformance(t *testing.T) {
	testutil.RequiresRoot(t) // needs -test.root, like containerd's own suite runs
	bin := os.Getenv("SNAPSHOTTER_BIN")
	if bin == "" {
		t.Fatal("SNAPSHOTTER_BIN is not set (path of the snapshotter binary to test)")
	}
	abs, err := exec.LookPath(bin)
	if err != nil {
		t.Fatalf("SNAPSHOTTER_BIN: %v", err)
	}
	if abs, err = filepath.Abs(abs); err != nil {
		t.Fatal(err)
	}
	args := strings.Fields(os.Getenv("SNAPSHOTTER_ARGS"))
	t.Logf("snapshotter: %s %s", abs, strings.Join(args, " "))
	testsuite.SnapshotterSuite(t, snapshotterName, newExternalSnapshotter(abs, args))
}

// newExternalSnapshotter returns the suite's factory: one fresh process per test.
func newExternalSnapshotter(bin string, extraArgs []string) testsuite.SnapshotterFunc {
	return func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		d, err := startDaemon(ctx, bin, extraArgs, root)
		if err != nil {
			return nil, nil, err
		}
		conn, err := d.connect(ctx)
		if err != nil {
			d.stop()
			return nil, nil, fmt.Errorf("%w\n%s", err, d.logTail())
		}
		sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), snapshotterName)
		tb := testingTB(ctx)
		cleanup := func() error {
			conn.Close()
			err := d.stop()
			if err != nil {
				return fmt.Errorf("%w\n%s", err, d.logTail())
			}
			if tb != nil && tb.Failed() {
				tb.Logf("test failed; %s", d.logTail())
			}
			return nil
		}
		return sn, cleanup, nil
	}
}

type daemon struct {
	cmd     *exec.Cmd
	sock    string
	logPath string
	done    chan struct{} // closed when the process has exited
	waitErr error         // valid after done is closed
}

func startDaemon(ctx context.Context, bin string, extraArgs []string, root string) (*daemon, error) {
	sock := filepath.Join(root, "snap.sock")
	if len(sock) > maxSocketPath {
		return nil, fmt.Errorf("socket path %q is %d bytes, longer than the unix socket limit of %d: use a shorter TMPDIR", sock, len(sock), maxSocketPath)
	}
	logPath := filepath.Join(root, "daemon.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	args := append([]string{"--root", filepath.Join(root, "state"), "--address", sock}, extraArgs...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// never outlive the test binary (e.g. when it is killed by a timeout)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	log.G(ctx).Debugf("started %s %s (pid %d)", bin, strings.Join(args, " "), cmd.Process.Pid)
	d := &daemon{cmd: cmd, sock: sock, logPath: logPath, done: make(chan struct{})}
	go func() {
		d.waitErr = cmd.Wait()
		logf.Close()
		close(d.done)
	}()
	return d, nil
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// connect waits until the socket accepts a gRPC call (at most readyTimeout)
// and returns a client connection set up like containerd's proxy plugins.
func (d *daemon) connect(ctx context.Context) (*grpc.ClientConn, error) {
	deadline := time.Now().Add(readyTimeout)
	// 1. plain connect() on the socket: avoids gRPC's 1 s reconnect backoff
	for {
		if d.exited() {
			return nil, fmt.Errorf("snapshotter exited before it was ready: %v", d.waitErr)
		}
		if c, err := net.DialTimeout("unix", d.sock, time.Second); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("snapshotter did not listen on %s within %v", d.sock, readyTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// 2. same dial options as containerd 1.6 (services/server/server.go getClient)
	backoffConfig := backoff.DefaultConfig
	backoffConfig.MaxDelay = 3 * time.Second
	conn, err := grpc.Dial(dialer.DialAddress(d.sock),
		grpc.WithInsecure(),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoffConfig}),
		grpc.WithContextDialer(dialer.ContextDialer),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(defaults.DefaultMaxRecvMsgSize)),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(defaults.DefaultMaxSendMsgSize)),
	)
	if err != nil {
		return nil, fmt.Errorf("grpc dial %s: %w", d.sock, err)
	}

	// 3. a real call: Stat of a key that does not exist. Any answer from the
	// server (NotFound expected, but any status) means it is serving.
	client := snapshotsapi.NewSnapshotsClient(conn)
	for {
		if d.exited() {
			conn.Close()
			return nil, fmt.Errorf("snapshotter exited before it was ready: %v", d.waitErr)
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := client.Stat(cctx, &snapshotsapi.StatSnapshotRequest{
			Snapshotter: snapshotterName,
			Key:         "augur-conformance-readiness-probe",
		}, grpc.WaitForReady(true))
		cancel()
		code := status.Code(err)
		if code != codes.Unavailable && code != codes.DeadlineExceeded && code != codes.Canceled {
			log.G(ctx).Debugf("snapshotter ready (probe Stat -> %v)", code)
			return conn, nil
		}
		if time.Now().After(deadline) {
			conn.Close()
			return nil, fmt.Errorf("snapshotter on %s did not answer a gRPC call within %v: %v", d.sock, readyTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM, waits up to stopTimeout (then SIGKILL) and reports an
// error unless the process exited with status 0 after SIGTERM.
func (d *daemon) stop() error {
	if d.exited() {
		return fmt.Errorf("snapshotter exited during the test (before SIGTERM): %v", exitString(d.waitErr))
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGTERM: %w", err)
	}
	select {
	case <-d.done:
		if d.waitErr != nil {
			return fmt.Errorf("snapshotter exited with %s after SIGTERM (want status 0)", exitString(d.waitErr))
		}
		return nil
	case <-time.After(stopTimeout):
		d.cmd.Process.Kill()
		<-d.done
		return fmt.Errorf("snapshotter did not exit within %v of SIGTERM; killed with SIGKILL", stopTimeout)
	}
}

func exitString(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}

// logTail returns the end of the daemon's stdout+stderr, for failure reports.
func (d *daemon) logTail() string {
	b, err := os.ReadFile(d.logPath)
	if err != nil {
		return fmt.Sprintf("(no daemon log: %v)", err)
	}
	if len(b) > logTailBytes {
		b = b[len(b)-logTailBytes:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return fmt.Sprintf("----- tail of %s -----\n%s----- end of daemon log -----", d.logPath, b)
}

// testingTB digs the current test's testing.TB out of the logger that the
// suite puts into ctx (log/logtest.WithT adds a hook holding it in its field
// "t"). The suite's factory receives no *testing.T, but the daemon log should
// be printed when the test fails. Returns nil if the layout ever changes; the
// log tail is then printed only when the daemon itself misbehaves.
func testingTB(ctx context.Context) testing.TB {
	entry := log.G(ctx)
	if entry == nil || entry.Logger == nil {
		return nil
	}
	for _, hooks := range entry.Logger.Hooks {
		for _, h := range hooks {
			v := reflect.ValueOf(h)
			if v.Kind() == reflect.Ptr {
				v = v.Elem()
			}
			if v.Kind() != reflect.Struct {
				continue
			}
			f := v.FieldByName("t")
			if !f.IsValid() || !f.CanAddr() {
				continue
			}
			if tb, ok := reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Interface().(testing.TB); ok {
				return tb
			}
		}
	}
	return nil
}
