"""`trueno-ublk benchmark`: the device benchmark against kernel zram
(device, targets, html_report) and the page codecs' (codecs)."""
