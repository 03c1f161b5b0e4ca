"""Every file a person reads: leaderboard, breakdown and region tables (md/csv/tex), the sanity
figure and tables, the scores of `gazebench score`, the paper tables (``papers``), the figures
(``figures``) and the self-contained HTML report (``html``).  Drawn from what runs stored, through
``gazebench.aggregate`` (never from the maps in memory)."""
