package workload

import (
	"io"
	"os"
	"time"
)

// outputLinger is how long the workload's output may still be copied once it has
// exited: a process it left behind may hold the pipe open for ever.
const outputLinger = time.Second

// outputs are the workload's standard files: /dev/null for input, and for output a
// file as given, /dev/null for none, or a pipe copied to the writer (one pipe when
// stdout and stderr are the same writer, so it never sees concurrent writes).
type outputs struct {
	files     []*os.File // the child's 0, 1 and 2
	parentEnd []*os.File // closed once the child has them
	readers   []*os.File // closed when the copies end, or outputLinger after exit
	copied    []chan struct{}
}

func newOutputs(stdout, stderr io.Writer) (*outputs, error) {
	o := &outputs{}
	null, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	o.parentEnd = append(o.parentEnd, null)
	o.files = append(o.files, null)
	out, err := o.output(stdout)
	if err != nil {
		o.started()
		o.exited()
		return nil, err
	}
	errFile := out
	if !sameWriter(stdout, stderr) {
		if errFile, err = o.output(stderr); err != nil {
			o.started()
			o.exited()
			return nil, err
		}
	}
	o.files = append(o.files, out, errFile)
	return o, nil
}

func (o *outputs) output(w io.Writer) (*os.File, error) {
	if f, ok := w.(*os.File); ok {
		return f, nil
	}
	if w == nil {
		f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			return nil, err
		}
		o.parentEnd = append(o.parentEnd, f)
		return f, nil
	}
	r, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	o.parentEnd = append(o.parentEnd, pw)
	o.readers = append(o.readers, r)
	done := make(chan struct{})
	o.copied = append(o.copied, done)
	go func() {
		defer close(done)
		_, _ = io.Copy(w, r)
	}()
	return pw, nil
}

// started closes the parent's copies of the child's ends.
func (o *outputs) started() {
	for _, f := range o.parentEnd {
		f.Close()
	}
	o.parentEnd = nil
}

// exited waits a little for the copies to drain, then ends them.
func (o *outputs) exited() {
	t := time.NewTimer(outputLinger)
	defer t.Stop()
	for _, done := range o.copied {
		select {
		case <-done:
		case <-t.C:
		}
	}
	for _, r := range o.readers {
		r.Close()
	}
	for _, done := range o.copied {
		<-done
	}
}

// sameWriter reports whether a and b are the same writer; writers that are not
// comparable count as different.
func sameWriter(a, b io.Writer) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return a != nil && a == b
}
