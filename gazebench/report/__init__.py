"""Every file a person reads: leaderboard, breakdown and region tables (md/csv/tex), the sanity
figure and tables, the scores of `gazebench score`; later the paper tables, figures and the HTML
report.  Drawn from what runs stored, through ``gazebench.aggregate`` (never from the maps in memory)."""
