"""Column list of the simulated ad log, grouped by role (see simulator/README.md)."""

IMPRESSION_ID = "impression_id"
EVENT_TIME = "event_time"
CLICK = "click"
LABEL = "conversion"
TRUE_CVR = "true_cvr"
TRUE_CTR = "true_ctr"

# Known to the ad server at request time.
ID_FEATURES = ("user_id", "ad_id", "advertiser_id", "creative_id")
SMALL_CATEGORICALS = ("device", "os", "region", "placement", "ad_category", "hour", "weekday")
REGULAR_CATEGORICAL = ID_FEATURES + SMALL_CATEGORICALS
REGULAR_NUMERIC = ("user_past_clicks", "user_past_conversions", "bid")

# Logged after the click (HA-PFD Table 1, tag/like/share as three sparse flags) ...
PAPER_DISCRETE = ("page_jump", "done_loading", "play_2s", "button_click", "page_click",
                  "swipe_click", "tag", "like", "share")
PAPER_CONTINUOUS = ("duration", "click_leave_time", "in_platform_time")
# ... signals that nearly are the label (selection must drop them) ...
LEAKS_DISCRETE = ("payment_page_visit", "order_form_submit")
# ... and signals independent of everything (selection must rank them low).
NOISE_DISCRETE = ("noise_flag",)
NOISE_CONTINUOUS = ("noise_scroll_speed",)

PRIVILEGED_DISCRETE = PAPER_DISCRETE + LEAKS_DISCRETE + NOISE_DISCRETE
PRIVILEGED_CONTINUOUS = PAPER_CONTINUOUS + NOISE_CONTINUOUS

IGNORED = (IMPRESSION_ID, EVENT_TIME, TRUE_CTR)

COLUMNS = ((IMPRESSION_ID, EVENT_TIME) + REGULAR_CATEGORICAL + REGULAR_NUMERIC
           + PRIVILEGED_DISCRETE + PRIVILEGED_CONTINUOUS + (CLICK, LABEL, TRUE_CTR, TRUE_CVR))
