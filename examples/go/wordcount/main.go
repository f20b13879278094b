// Word count with Beam's Go SDK, to run on ferrobeam like any portable
// runner (see the README's "Go SDK pipelines"):
//
//	go build -o wordcount . && ./wordcount --runner=universal \
//	    --endpoint=localhost:8099 --environment_type=LOOPBACK \
//	    --input ../../data/river.txt --output /tmp/counts.txt
//
// It counts the same words as examples/wordcount.py (Python's `[\w']+`,
// Unicode letters included, lower-cased) and writes the same lines
// ("word: count"), so the two outputs can be compared.
package main

import (
	"context"
	"flag"
	"fmt"
	"regexp"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/textio"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/log"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/transforms/stats"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/x/beamx"
)

var (
	input  = flag.String("input", "", "Text file to count the words of.")
	output = flag.String("output", "", "File to write the counts to.")
)

// Python's \w with re.UNICODE: letters, digits and underscore of any script.
var wordRE = regexp.MustCompile(`[\p{L}\p{N}_']+`)

func extractWords(line string, emit func(string)) {
	for _, w := range wordRE.FindAllString(line, -1) {
		emit(strings.ToLower(w))
	}
}

func formatCount(w string, c int) string { return fmt.Sprintf("%s: %d", w, c) }

func init() {
	beam.RegisterFunction(extractWords)
	beam.RegisterFunction(formatCount)
}

func main() {
	flag.Parse()
	beam.Init()
	ctx := context.Background()
	if *input == "" || *output == "" {
		log.Exit(ctx, "both --input and --output are required")
	}
	p := beam.NewPipeline()
	s := p.Root()
	lines := textio.Read(s, *input)
	words := beam.ParDo(s, extractWords, lines)
	counted := stats.Count(s, words)
	textio.Write(s, *output, beam.ParDo(s, formatCount, counted))
	if err := beamx.Run(ctx, p); err != nil {
		log.Exitf(ctx, "word count failed: %v", err)
	}
}
