package clickhouse_test

import (
	"os"
	"testing"

	"github.com/qfence/qfence/sinks/clickhouse/chtest"
)

func TestMain(m *testing.M) { os.Exit(chtest.Main(m)) }
