package kafka

import (
	"fmt"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"
)

// A broker's error code is told in words ("[42] Invalid Request" says
// little); anything else as it is.
func TestDescribeSaysWhyInWords(t *testing.T) {
	if got := describe(fmt.Errorf("create: %w", kafka.InvalidRequest)); !strings.Contains(strings.ToLower(got), "request") || strings.HasPrefix(got, "[") {
		t.Errorf("describe(InvalidRequest) = %q", got)
	}
	if got := describe(fmt.Errorf("plain")); got != "plain" {
		t.Errorf("describe(plain) = %q", got)
	}
}
