package push

import (
	"context"
	"errors"
	"unicode/utf8"

	"github.com/ternhq/tern/core"
)

// maxPreviewText bounds the message text a push carries, in bytes: APNs
// payloads and FCM data are limited to 4 KiB.
const maxPreviewText = 1024

// preview is what a push shows of a message when core sends one.
type preview struct {
	from, group string
	// text is the body when it is UTF-8 (cut at maxPreviewText on a rune
	// boundary); "" for binary bodies.
	text string
}

func newPreview(e *core.Entry) *preview {
	if e == nil {
		return nil
	}
	p := &preview{from: string(e.From), group: string(e.Group)}
	if utf8.Valid(e.Body) {
		b := e.Body
		if len(b) > maxPreviewText {
			b = b[:maxPreviewText]
			for len(b) > 0 && !utf8.Valid(b) {
				b = b[:len(b)-1]
			}
		}
		p.text = string(b)
	}
	return p
}

// networkOutcome classifies a failed round trip: the provider was not
// reached or did not answer.
func networkOutcome(err error) outcome {
	if errors.Is(err, context.DeadlineExceeded) {
		return outcome{class: classRetry, reason: "timeout", err: err}
	}
	return outcome{class: classRetry, reason: "network", err: err}
}
