package config

import "encoding/json"

// DashboardQuery is one query of a Grafana dashboard: its panel's title
// and its PromQL.
type DashboardQuery struct {
	Panel, Expr string
}

// DashboardQueries reads the queries of a Grafana dashboard's JSON (the
// shipped one is config/monitoring/dashboard.json), panel by panel.
func DashboardQueries(dashboard []byte) (panels int, queries []DashboardQuery, err error) {
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(dashboard, &d); err != nil {
		return 0, nil, err
	}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			queries = append(queries, DashboardQuery{Panel: p.Title, Expr: tg.Expr})
		}
	}
	return len(d.Panels), queries, nil
}
